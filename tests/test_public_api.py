"""The framework's public API: what is listed stays, documented, and cheap to import.

The stable surface is the ``__all__`` of the public modules below (see docs/public-api.md).
``tests/data/public_api.txt`` lists every public name as ``module:name``. The tests fail when

- a module's ``__all__`` has a name the list does not (add it to the list: a new public name
  is a decision), or the list has a name that no longer resolves, or that left ``__all__``
  without a deprecation shim (``nixflex_engine._deprecation.deprecated_names``, which warns);
- a public name has no docstring: classes and functions their own (a dataclass's generated
  signature does not count), public methods and properties of public classes one (inherited
  from the method they override counts), constants and type aliases a ``#:`` comment on the
  line above their assignment;
- importing the framework's public packages loads a vendor SDK.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import subprocess
import sys
import types
import warnings
from pathlib import Path
from typing import Any

import pytest

from nixflex_engine._deprecation import deprecated_names

PUBLIC_MODULES = (
    "nixflex_engine.frames",
    "nixflex_engine.pipeline",
    "nixflex_engine.processors",
    "nixflex_engine.transports",
    "nixflex_engine.sandbox",
    "nixflex_engine.calls.chain",
    "nixflex_engine.calls.run",
    "nixflex_engine.calls.factories",
    "nixflex_engine.config",
    "nixflex_engine.testing",
)
LIST = Path(__file__).parent / "data" / "public_api.txt"


def listed() -> list[tuple[str, str]]:
    entries = []
    for raw in LIST.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            module, _, name = line.partition(":")
            entries.append((module, name))
    return entries


def test_the_list_is_sorted_and_names_only_public_modules() -> None:
    entries = listed()
    assert entries == sorted(set(entries)), "keep tests/data/public_api.txt sorted, no repeats"
    assert {m for m, _ in entries} <= set(PUBLIC_MODULES)


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_name_in_all_is_listed(module_name: str) -> None:
    module = importlib.import_module(module_name)
    exported = set(module.__all__)
    known = {name for m, name in listed() if m == module_name}
    new = sorted(exported - known)
    assert not new, f"new public names in {module_name}: add them to {LIST.name}: {new}"
    assert len(module.__all__) == len(exported), f"{module_name}.__all__ has repeats"


@pytest.mark.parametrize(("module_name", "name"), listed())
def test_no_listed_name_disappears_without_a_deprecation(module_name: str, name: str) -> None:
    module = importlib.import_module(module_name)
    if name in module.__all__:
        assert hasattr(module, name), f"{module_name}.__all__ names {name}, which does not exist"
        return
    with pytest.warns(DeprecationWarning):
        try:
            getattr(module, name)
        except AttributeError:
            pytest.fail(
                f"{module_name}:{name} was removed without a deprecation shim "
                "(see nixflex_engine._deprecation)"
            )


def _own_doc(obj: Any) -> str:
    doc = obj.__doc__ or ""
    if inspect.isclass(obj):
        doc = vars(obj).get("__doc__") or ""
        if doc.startswith(f"{obj.__name__}("):  # the signature @dataclass writes
            return ""
    return doc.strip()


def _member_doc(cls: type, name: str, value: Any) -> str:
    if isinstance(value, property):
        for klass in cls.__mro__:
            prop = vars(klass).get(name)
            if isinstance(prop, property) and prop.__doc__:
                return prop.__doc__
        return ""
    return inspect.getdoc(getattr(cls, name)) or ""


def _has_doc_comment(module_name: str, name: str) -> bool:
    """A ``#:`` comment right above ``name = ...`` in the module or, for a package, in the
    submodule its ``__init__`` takes the name from."""
    module = importlib.import_module(module_name)
    sources = [module]
    package = getattr(module, "__path__", None)
    if package is not None:
        sources += [
            importlib.import_module(f"{module_name}.{p.stem}")
            for p in sorted(Path(package[0]).glob("*.py"))
            if p.stem != "__init__"
        ]
    for source in sources:
        text = inspect.getsource(source)
        lines = text.splitlines()
        for node in ast.parse(text).body:
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, ast.AnnAssign):
                targets = [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                above = lines[node.lineno - 2].strip() if node.lineno >= 2 else ""
                if above.startswith("#:"):
                    return True
    return False


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_public_name_has_a_docstring(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert (module.__doc__ or "").strip(), f"{module_name} has no module docstring"
    missing: list[str] = []
    for name in module.__all__:
        obj = getattr(module, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            if not _own_doc(obj):
                missing.append(name)
            if inspect.isclass(obj):
                fields = getattr(obj, "__dataclass_fields__", {})
                for attr, value in vars(obj).items():
                    if attr.startswith("_") or attr in fields:
                        continue
                    if callable(value) or isinstance(value, property | classmethod | staticmethod):
                        if not _member_doc(obj, attr, value):
                            missing.append(f"{name}.{attr}")
        elif not isinstance(obj, types.ModuleType) and not _has_doc_comment(module_name, name):
            missing.append(f"{name} (constant: add a '#:' comment above it)")
    assert not missing, f"undocumented public names in {module_name}: {missing}"


def test_importing_the_framework_loads_no_vendor_sdk() -> None:
    code = (
        "import sys, time\n"
        "t = time.perf_counter()\n"
        "import nixflex_engine.pipeline\n"
        "pipeline_s = time.perf_counter() - t\n"
        "import nixflex_engine.frames, nixflex_engine.processors, nixflex_engine.sandbox\n"
        "import nixflex_engine.transports, nixflex_engine.processors.codec\n"
        "heavy = ('anthropic', 'deepgram', 'twilio.rest', 'sqlalchemy', 'httpx')\n"
        "print([m for m in heavy if m in sys.modules], round(pipeline_s, 3))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    loaded, _seconds = out.rsplit(" ", 1)
    assert loaded == "[]", out


def test_the_lazy_packages_resolve_every_name_from_its_module() -> None:
    for package in ("nixflex_engine.processors", "nixflex_engine.sandbox"):
        module = importlib.import_module(package)
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                assert obj.__module__.startswith(package + "."), (package, name)
        with pytest.raises(AttributeError):
            module.NoSuchName  # noqa: B018
        assert set(module.__all__) <= set(dir(module))


def test_a_deprecation_shim_warns_and_returns_the_replacement() -> None:
    getattr_ = deprecated_names(
        "nixflex_engine.old", {"OldPipeline": ("nixflex_engine.pipeline:Pipeline", "0.3")}
    )
    from nixflex_engine.pipeline import Pipeline

    with pytest.warns(DeprecationWarning, match=r"old\.OldPipeline is deprecated.*0\.3"):
        assert getattr_("OldPipeline") is Pipeline
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(AttributeError):
            getattr_("Other")
