"""The standard processors, importable from one place.

::

    from nixflex_engine.processors import MulawDecoder, VADProcessor, ClaudeLLM, DeepgramTTS

Each lives in its own module (``codec``, ``vad``, ``stt``, ``voicemail``, ``turns``,
``context``, ``llm``, ``text``, ``tts``, ``metrics``, ``recorder``, ``prompt``); the module
docstring says which frames it consumes and emits (and ``docs/chain-contract.md`` has the whole
table). Names are loaded on first use, so ``import nixflex_engine.processors.codec`` does not
pay for the vendor SDKs (``anthropic``, ``deepgram``) the LLM, STT and TTS processors import.

Provider interfaces — implement one to swap a vendor: :class:`SpeechToText` (open an
:class:`STTConnection`), :class:`LLMService` (``stream_reply``/``retry_hint``),
:class:`TextToSpeech` (open a :class:`TTSConnection`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nixflex_engine.processors.codec import MulawDecoder
    from nixflex_engine.processors.context import (
        AssistantContextAggregator,
        ConversationContext,
        UserContextAggregator,
    )
    from nixflex_engine.processors.llm import (
        ClaudeLLM,
        LLMService,
        LLMTool,
        LLMUsage,
        RetryHint,
        ToolCall,
        ToolResult,
    )
    from nixflex_engine.processors.metrics import TurnMetricsProcessor
    from nixflex_engine.processors.prompt import HistoryEntry, build_system_prompt, interpolate
    from nixflex_engine.processors.recorder import RecorderProcessor
    from nixflex_engine.processors.stt import (
        DeepgramSTT,
        SpeechToText,
        STTAuthError,
        STTConnection,
        STTSpeechStarted,
        STTTranscript,
        STTUtteranceEnd,
    )
    from nixflex_engine.processors.text import SentenceChunker
    from nixflex_engine.processors.tts import (
        DeepgramTTS,
        TextToSpeech,
        TTSAudio,
        TTSAuthError,
        TTSCleared,
        TTSConnection,
        TTSFlushed,
        TTSWarning,
    )
    from nixflex_engine.processors.turns import TurnTakingProcessor
    from nixflex_engine.processors.vad import VADProcessor, VoiceActivityDetector
    from nixflex_engine.processors.voicemail import VoicemailProcessor

#: Public name → the submodule defining it.
_EXPORTS: dict[str, str] = {
    "MulawDecoder": "codec",
    "AssistantContextAggregator": "context",
    "ConversationContext": "context",
    "UserContextAggregator": "context",
    "ClaudeLLM": "llm",
    "LLMService": "llm",
    "LLMTool": "llm",
    "LLMUsage": "llm",
    "RetryHint": "llm",
    "ToolCall": "llm",
    "ToolResult": "llm",
    "TurnMetricsProcessor": "metrics",
    "HistoryEntry": "prompt",
    "build_system_prompt": "prompt",
    "interpolate": "prompt",
    "RecorderProcessor": "recorder",
    "DeepgramSTT": "stt",
    "STTAuthError": "stt",
    "STTConnection": "stt",
    "STTSpeechStarted": "stt",
    "STTTranscript": "stt",
    "STTUtteranceEnd": "stt",
    "SpeechToText": "stt",
    "SentenceChunker": "text",
    "DeepgramTTS": "tts",
    "TTSAudio": "tts",
    "TTSAuthError": "tts",
    "TTSCleared": "tts",
    "TTSConnection": "tts",
    "TTSFlushed": "tts",
    "TTSWarning": "tts",
    "TextToSpeech": "tts",
    "TurnTakingProcessor": "turns",
    "VADProcessor": "vad",
    "VoiceActivityDetector": "vad",
    "VoicemailProcessor": "voicemail",
}

__all__ = [
    "AssistantContextAggregator",
    "ClaudeLLM",
    "ConversationContext",
    "DeepgramSTT",
    "DeepgramTTS",
    "HistoryEntry",
    "LLMService",
    "LLMTool",
    "LLMUsage",
    "MulawDecoder",
    "RecorderProcessor",
    "RetryHint",
    "STTAuthError",
    "STTConnection",
    "STTSpeechStarted",
    "STTTranscript",
    "STTUtteranceEnd",
    "SentenceChunker",
    "SpeechToText",
    "TTSAudio",
    "TTSAuthError",
    "TTSCleared",
    "TTSConnection",
    "TTSFlushed",
    "TTSWarning",
    "TextToSpeech",
    "ToolCall",
    "ToolResult",
    "TurnMetricsProcessor",
    "TurnTakingProcessor",
    "UserContextAggregator",
    "VADProcessor",
    "VoiceActivityDetector",
    "VoicemailProcessor",
    "build_system_prompt",
    "interpolate",
]


def __getattr__(name: str) -> Any:
    """Load a public name from its submodule on first use."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
