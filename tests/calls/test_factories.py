"""Chain factories: the import-path syntax, the operator's allow-list, loading, and the checks
that turn every way a factory can break into a ChainFactoryError (the session fails the call)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any, cast

import pytest
from pydantic import ValidationError

from nixflex_engine.calls.chain import AgentProfile, CallContext
from nixflex_engine.calls.factories import (
    ChainFactoryError,
    check_allowed_entry,
    factory_allowed,
    is_factory_path,
    load_chain_factory,
    resolve_chain_factory,
)
from nixflex_engine.config import Settings
from nixflex_engine.pipeline import FrameProcessor, Pipeline
from nixflex_engine.transports.twilio_media import TwilioMediaTransport

MODULE = """
from nixflex_engine.pipeline import FrameProcessor, Pipeline

CALLS = []

def build(ctx):
    CALLS.append(ctx.call_id)
    return Pipeline([FrameProcessor(name="mine")], name="custom")

class Chains:
    @staticmethod
    def build(ctx):
        return FrameProcessor(name="nested")

def explodes(ctx):
    raise RuntimeError("no chain today")

def wrong_type(ctx):
    return "not a processor"

NOT_CALLABLE = 42
"""


@pytest.fixture
def factories_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"nixflex_test_chains_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(MODULE))
    (tmp_path / f"{name}_broken.py").write_text("raise ImportError('missing dependency')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def _ctx() -> CallContext:
    return CallContext(
        call_id="CA-factory",
        agent=AgentProfile(),
        transport=cast(TwilioMediaTransport, None),  # these factories never touch it
        settings=Settings(),
    )


@pytest.mark.parametrize(
    ("path", "ok"),
    [
        ("myapp.chains:build", True),
        ("m:f", True),
        ("myapp.chains:Chains.build", True),
        ("_private.mod:_f2", True),
        ("myapp.chains", False),
        ("myapp.chains:", False),
        (":build", False),
        ("myapp..chains:build", False),
        ("myapp.chains:build:again", False),
        ("my-app:build", False),
        ("1app:build", False),
        ("myapp.chains:*", False),
        ("myapp.chains:build ", False),
        ("a:" + "b" * 200, False),
    ],
)
def test_factory_path_syntax(path: str, ok: bool) -> None:
    assert is_factory_path(path) is ok


def test_allow_list_exact_paths_and_whole_modules() -> None:
    allowed = ["myapp.chains:build", "other.mod:*"]
    assert factory_allowed("myapp.chains:build", allowed)
    assert not factory_allowed("myapp.chains:build2", allowed)
    assert factory_allowed("other.mod:anything", allowed)
    assert factory_allowed("other.mod:Deep.attr", allowed)
    assert not factory_allowed("other.mod.sub:anything", allowed)  # a module, not a prefix
    assert not factory_allowed("other:anything", allowed)
    assert not factory_allowed("myapp.chains:build", [])  # default: none allowed
    assert not factory_allowed("bad path", ["bad path"])


def test_allowed_entries_are_checked() -> None:
    assert check_allowed_entry(" a.b:* ") == "a.b:*"
    assert check_allowed_entry("a.b:c") == "a.b:c"
    for bad in ("a.b", "a.b:c*", "*:*", "a.b:**", ""):
        with pytest.raises(ValueError):
            check_allowed_entry(bad)


def test_setting_reads_comma_separated_or_json(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().allowed_chain_factories == []
    monkeypatch.setenv("NIXFLEX_ALLOWED_CHAIN_FACTORIES", "myapp.chains:build, other:*")
    assert Settings().allowed_chain_factories == ["myapp.chains:build", "other:*"]
    monkeypatch.setenv("NIXFLEX_ALLOWED_CHAIN_FACTORIES", '["x.y:z"]')
    assert Settings().allowed_chain_factories == ["x.y:z"]
    monkeypatch.setenv("NIXFLEX_ALLOWED_CHAIN_FACTORIES", "no-colon")
    with pytest.raises(ValidationError, match="allowed chain factory entry"):
        Settings()


def test_no_factory_means_the_default() -> None:
    def default(ctx: CallContext) -> FrameProcessor:
        return FrameProcessor()

    for config in ({}, {"chain_factory": None}, {"chain_factory": ""}):
        assert resolve_chain_factory(config, allowed=["a:*"], default=default) is default


def test_an_allowed_factory_is_called_with_the_call_context(factories_module: str) -> None:
    import importlib

    def default(ctx: CallContext) -> FrameProcessor:
        raise AssertionError("the default must not run")

    factory = resolve_chain_factory(
        {"chain_factory": f"{factories_module}:build"},
        allowed=[f"{factories_module}:build"],
        default=default,
    )
    chain = factory(_ctx())
    assert isinstance(chain, Pipeline) and chain.name == "custom"
    assert importlib.import_module(factories_module).CALLS == ["CA-factory"]
    nested = resolve_chain_factory(
        {"chain_factory": f"{factories_module}:Chains.build"},
        allowed=[f"{factories_module}:*"],
        default=default,
    )
    assert nested(_ctx()).name == "nested"


@pytest.mark.parametrize(
    ("attr", "reason"),
    [
        ("explodes", "raised RuntimeError('no chain today')"),
        ("wrong_type", "returned str, not a FrameProcessor"),
        ("NOT_CALLABLE", "'NOT_CALLABLE' is not callable"),
        ("missing", "has no 'missing'"),
    ],
)
def test_a_broken_factory_raises_chain_factory_error(
    factories_module: str, attr: str, reason: str
) -> None:
    path = f"{factories_module}:{attr}"
    factory = resolve_chain_factory(
        {"chain_factory": path}, allowed=[f"{factories_module}:*"], default=_never
    )
    with pytest.raises(ChainFactoryError) as info:
        factory(_ctx())
    assert info.value.path == path
    assert reason in info.value.reason


def test_a_module_that_fails_to_import(factories_module: str) -> None:
    path = f"{factories_module}_broken:build"
    with pytest.raises(ChainFactoryError, match=r"cannot import.*missing dependency"):
        load_chain_factory(path)
    with pytest.raises(ChainFactoryError, match="cannot import"):
        load_chain_factory("nixflex_no_such_module_anywhere:build")


def test_a_factory_no_longer_allowed_fails_the_call(factories_module: str) -> None:
    factory = resolve_chain_factory(
        {"chain_factory": f"{factories_module}:build"}, allowed=[], default=_never
    )
    with pytest.raises(ChainFactoryError, match="allowed_chain_factories"):
        factory(_ctx())


def _never(ctx: Any) -> FrameProcessor:
    raise AssertionError("the default must not run")
