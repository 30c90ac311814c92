"""The sandbox: protocol-true fakes for offline runs, tests, benchmarks and ``make demo``.

::

    from nixflex_engine.sandbox import FakeAnthropic, FakeDeepgram, SandboxCallee, Say

- :class:`SandboxCallee` — a fake Twilio media-stream client playing a person from a script of
  steps (:class:`Say`, :class:`Silence`, :class:`BargeIn`, :class:`UntilAgentSilent`,
  :class:`Hangup` ...); it decodes what it heard of the agent (:mod:`.speech`).
- :class:`FakeDeepgram` (streaming STT and TTS), :class:`FakeAnthropic` (the Messages API,
  scripted replies, :class:`Rule` s, :class:`ToolReply`, faults) — the real SDKs talk to them
  by base URL alone.
- :class:`SandboxCarrier` — fake Twilio REST that *plays* each call it is asked to place
  (ringing, AMD, signed callbacks, a callee on the media stream); :class:`CarrierScript`.
- :func:`serve_sandbox` / :func:`serve_app` — serve them (or any ASGI app) on a free
  127.0.0.1 port; :func:`build_sandbox_app` mounts the fakes in one app
  (``nixflex-engine sandbox`` serves it with the carrier).

Names load on first use (the carrier pulls in the Twilio SDK).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nixflex_engine.sandbox.app import build_sandbox_app
    from nixflex_engine.sandbox.callee import (
        BargeIn,
        CalleeResult,
        CalleeScript,
        Drop,
        Dtmf,
        Hangup,
        Noise,
        PlayFile,
        SandboxCallee,
        Say,
        Silence,
        Step,
        Tone,
        UntilAgentHeard,
        UntilAgentSilent,
        UntilAgentSpeaks,
        UntilCleared,
    )
    from nixflex_engine.sandbox.carrier import CarrierScript, SandboxCarrier, carrier_routes
    from nixflex_engine.sandbox.fake_anthropic import (
        AnthropicSettings,
        FakeAnthropic,
        Rule,
        ToolReply,
    )
    from nixflex_engine.sandbox.fake_deepgram import FakeDeepgram, ListenSettings, SpeakSettings
    from nixflex_engine.sandbox.serve import serve_app, serve_sandbox

#: Public name → the submodule defining it.
_EXPORTS: dict[str, str] = {
    "build_sandbox_app": "app",
    "BargeIn": "callee",
    "CalleeResult": "callee",
    "CalleeScript": "callee",
    "Drop": "callee",
    "Dtmf": "callee",
    "Hangup": "callee",
    "Noise": "callee",
    "PlayFile": "callee",
    "SandboxCallee": "callee",
    "Say": "callee",
    "Silence": "callee",
    "Step": "callee",
    "Tone": "callee",
    "UntilAgentHeard": "callee",
    "UntilAgentSilent": "callee",
    "UntilAgentSpeaks": "callee",
    "UntilCleared": "callee",
    "CarrierScript": "carrier",
    "SandboxCarrier": "carrier",
    "carrier_routes": "carrier",
    "AnthropicSettings": "fake_anthropic",
    "FakeAnthropic": "fake_anthropic",
    "Rule": "fake_anthropic",
    "ToolReply": "fake_anthropic",
    "FakeDeepgram": "fake_deepgram",
    "ListenSettings": "fake_deepgram",
    "SpeakSettings": "fake_deepgram",
    "serve_app": "serve",
    "serve_sandbox": "serve",
}

__all__ = [
    "AnthropicSettings",
    "BargeIn",
    "CalleeResult",
    "CalleeScript",
    "CarrierScript",
    "Drop",
    "Dtmf",
    "FakeAnthropic",
    "FakeDeepgram",
    "Hangup",
    "ListenSettings",
    "Noise",
    "PlayFile",
    "Rule",
    "SandboxCallee",
    "SandboxCarrier",
    "Say",
    "Silence",
    "SpeakSettings",
    "Step",
    "Tone",
    "ToolReply",
    "UntilAgentHeard",
    "UntilAgentSilent",
    "UntilAgentSpeaks",
    "UntilCleared",
    "build_sandbox_app",
    "carrier_routes",
    "serve_app",
    "serve_sandbox",
]


def __getattr__(name: str) -> Any:
    """Load a public name from its submodule on first use."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
