"""Custom chains on the engine: an agent names a chain factory, the operator allows it.

An agent's ``chain_factory`` is an import path ``"package.module:attribute"`` (the attribute
may be dotted: ``"myapp.chains:Chains.build"``). For each call of that agent the session
calls the factory with the call's :class:`~nixflex_engine.calls.chain.CallContext` and runs
the :class:`~nixflex_engine.pipeline.FrameProcessor` it returns, wrapped like the standard
chain (latency figures, recording, transcript, hang-up, webhooks).

Only factories the operator allows run: the setting ``allowed_chain_factories`` lists exact
paths (``"myapp.chains:build"``) or whole modules (``"myapp.chains:*"``); empty (the default)
allows none. The API refuses an agent naming a factory that is not allowed
(``400 chain_factory_not_allowed``); a factory allowed when the agent was saved but no longer
allowed when a call starts fails that call.

A broken factory — its module does not import, the attribute is missing or not callable, it
raises, or it returns something that is not a ``FrameProcessor`` — raises
:class:`ChainFactoryError` from the factory :func:`resolve_chain_factory` returns. The session
catches it: the call ends with ``ended_reason: error``, its record is final, its slot released,
its webhook sent. The engine goes on.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from nixflex_engine.pipeline import FrameProcessor

if TYPE_CHECKING:  # the chain module imports every vendor SDK; the settings import this one
    from nixflex_engine.calls.chain import CallContext

__all__ = [
    "CHAIN_FACTORY_PATTERN",
    "ChainFactory",
    "ChainFactoryError",
    "check_allowed_entry",
    "factory_allowed",
    "is_factory_path",
    "load_chain_factory",
    "resolve_chain_factory",
]

#: Builds the agent chain for one call (the standard chain, or an agent's own factory).
ChainFactory = Callable[["CallContext"], FrameProcessor]

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_DOTTED = rf"{_IDENT}(?:\.{_IDENT})*"
#: ``module:attribute`` — a dotted module path, a colon, a dotted attribute path.
CHAIN_FACTORY_PATTERN = rf"^{_DOTTED}:{_DOTTED}$"
_PATH = re.compile(CHAIN_FACTORY_PATTERN)
_ALLOWED_ENTRY = re.compile(rf"^{_DOTTED}:(?:\*|{_DOTTED})$")
_MAX_LENGTH = 200


class ChainFactoryError(Exception):
    """A chain factory could not build a chain; ``path`` names it, the message says why."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"chain factory {path!r}: {reason}")
        self.path = path
        self.reason = reason


def is_factory_path(value: str) -> bool:
    """Whether ``value`` is a well-formed ``module:attribute`` import path."""
    return len(value) <= _MAX_LENGTH and _PATH.match(value) is not None


def check_allowed_entry(entry: str) -> str:
    """One entry of ``allowed_chain_factories``: ``module:attribute`` or ``module:*``.

    Returns it stripped; raises :class:`ValueError` when it is neither.
    """
    entry = entry.strip()
    if len(entry) > _MAX_LENGTH or _ALLOWED_ENTRY.match(entry) is None:
        raise ValueError(
            f"{entry!r} is not an allowed chain factory entry: use 'module:attribute' or 'module:*'"
        )
    return entry


def factory_allowed(path: str, allowed: Iterable[str]) -> bool:
    """Whether ``allowed`` (exact paths or ``module:*``) lets ``path`` run."""
    if not is_factory_path(path):
        return False
    module = path.partition(":")[0]
    for entry in allowed:
        if entry == path or entry == f"{module}:*":
            return True
    return False


def load_chain_factory(path: str) -> Callable[..., Any]:
    """Import ``module`` and look up ``attribute`` of ``path``; raise
    :class:`ChainFactoryError` when it is malformed, does not import, or is not callable."""
    if not is_factory_path(path):
        raise ChainFactoryError(path, "not a 'module:attribute' import path")
    module_name, _, attr_path = path.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or anything the module raises at import
        raise ChainFactoryError(path, f"cannot import {module_name!r}: {exc!r}") from exc
    for part in attr_path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError as exc:
            raise ChainFactoryError(path, f"{module_name!r} has no {attr_path!r}") from exc
    if not callable(target):
        raise ChainFactoryError(path, f"{attr_path!r} is not callable")
    return target  # type: ignore[no-any-return]


def _checked(path: str) -> ChainFactory:
    def build(ctx: CallContext) -> FrameProcessor:
        factory = load_chain_factory(path)
        try:
            chain = factory(ctx)
        except ChainFactoryError:
            raise
        except Exception as exc:
            raise ChainFactoryError(path, f"raised {exc!r}") from exc
        if not isinstance(chain, FrameProcessor):
            raise ChainFactoryError(path, f"returned {type(chain).__name__}, not a FrameProcessor")
        return chain

    build.__name__ = f"chain_factory[{path}]"
    return build


def _refused(path: str) -> ChainFactory:
    def build(ctx: CallContext) -> FrameProcessor:
        raise ChainFactoryError(path, "not in the allowed_chain_factories setting")

    return build


def resolve_chain_factory(
    agent_config: Mapping[str, Any],
    *,
    allowed: Iterable[str],
    default: ChainFactory,
) -> ChainFactory:
    """The factory for a call of the agent whose stored config is ``agent_config``.

    No ``chain_factory`` (absent, null or empty): ``default`` (the server's factory, normally
    :func:`~nixflex_engine.calls.chain.build_standard_chain`). Otherwise a factory that imports
    the named one when called (so a module fixed on disk is picked up by the next process, and a
    broken one fails only the call) and checks what it returns; one that is not allowed any more
    fails the call. Every failure is a :class:`ChainFactoryError`.
    """
    path = agent_config.get("chain_factory")
    if not path:
        return default
    text = str(path)
    if not factory_allowed(text, allowed):
        return _refused(text)
    return _checked(text)
