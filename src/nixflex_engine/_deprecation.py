"""Deprecation shims for public names (private helper).

A name in the public API (``tests/data/public_api.txt``) is never simply deleted: it leaves
``__all__`` and keeps working for at least one minor release through a module-level
``__getattr__`` that warns::

    # in nixflex_engine/processors/vad.py, after renaming VADProcessor to SpeechDetector
    __getattr__ = deprecated_names(
        __name__, {"VADProcessor": ("nixflex_engine.processors.vad:SpeechDetector", "0.3")}
    )

``tests/test_public_api.py`` checks that every listed name still resolves, with a
``DeprecationWarning`` once it is out of ``__all__``.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["deprecated_names"]


def deprecated_names(module: str, moved: Mapping[str, tuple[str, str]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` resolving old public names with a ``DeprecationWarning``.

    ``moved``: old name → (``"package.module:new_name"`` of the replacement, the version that
    removes the old name).
    """
    table = dict(moved)

    def __getattr__(name: str) -> Any:
        if name not in table:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        target, removed_in = table[name]
        target_module, _, attr = target.partition(":")
        warnings.warn(
            f"{module}.{name} is deprecated and goes in {removed_in}: use {target_module}.{attr}",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(target_module), attr)

    return __getattr__
