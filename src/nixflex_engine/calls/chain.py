"""The one place that turns an agent into a processor chain.

:func:`build_standard_chain` assembles the standard agent chain for one call from the
agent's settings (:class:`AgentProfile`) and the call's context (:class:`CallContext`)::

    TwilioInput → MulawDecoder → VAD → DeepgramSTT → Voicemail → TurnTaking
      → UserContextAggregator → ClaudeLLM → DeepgramTTS → TwilioOutput
      → AssistantContextAggregator

SDK clients are built once per process, not per call (:class:`ProviderClients`, passed in
:attr:`CallContext.clients`): building one costs tens of ms of CPU (an SSL context loading the
CA bundle), and at a call's start that blocked the event loop of every other call for
~80-100 ms (three clients). Without ``clients`` each call builds its own, as before.

The call session wraps whatever chain it gets — this one, or a custom chain from an agent's
chain factory — with the processors every call has, :func:`call_pipeline`: latency figures
(``TurnMetricsProcessor``) and the recording (``RecorderProcessor``). Transcript lines,
metrics and the voicemail verdict reach the session as frames at the run's edges.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from nixflex_engine.config import Settings
from nixflex_engine.pipeline import Clock, FrameProcessor, Pipeline
from nixflex_engine.processors.codec import MulawDecoder
from nixflex_engine.processors.context import AssistantContextAggregator, UserContextAggregator
from nixflex_engine.processors.llm import ClaudeLLM, anthropic_client
from nixflex_engine.processors.metrics import TurnMetricsProcessor
from nixflex_engine.processors.prompt import HistoryEntry, build_system_prompt, interpolate
from nixflex_engine.processors.recorder import RecorderProcessor
from nixflex_engine.processors.stt import DeepgramSTT, deepgram_client
from nixflex_engine.processors.tts import DeepgramTTS
from nixflex_engine.processors.turns import TurnTakingProcessor
from nixflex_engine.processors.vad import VADProcessor
from nixflex_engine.processors.voicemail import VoicemailProcessor
from nixflex_engine.transports.twilio_media import TwilioMediaTransport

if TYPE_CHECKING:
    import anthropic
    from deepgram import AsyncDeepgramClient

__all__ = [
    "AgentProfile",
    "CallContext",
    "CallPipeline",
    "ProviderClients",
    "build_standard_chain",
    "call_pipeline",
]

VoicemailAction = Literal["hangup", "leave_message", "ignore"]


@dataclass(frozen=True, slots=True)
class AgentProfile:
    """What the chain needs of an agent (the API's agent fields, with their defaults)."""

    system_prompt: str = ""
    welcome_message: str = ""
    voice_id: str = "aura-2-thalia-en"
    language: str = "en"
    llm_model: str = "claude-haiku-4-5"
    max_tokens: int = 300
    interruption_sensitivity: int = 50
    silence_hangup_seconds: int = 30
    max_call_duration_seconds: int = 300
    voicemail_action: VoicemailAction = "hangup"
    voicemail_message: str = ""
    amd_enabled: bool = True
    record_call: bool = True
    history_calls: int = 3

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> AgentProfile:
        """Take the fields this profile knows from a stored agent config; ignore the rest.

        ``None`` means "the default" (the API stores unset optional fields as null).
        """
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in config.items() if k in known and v is not None})


@dataclass(frozen=True, slots=True)
class ProviderClients:
    """The SDK clients every call of a process shares (connections are still per call)."""

    deepgram: AsyncDeepgramClient
    anthropic: anthropic.AsyncAnthropic

    @classmethod
    def from_settings(cls, settings: Settings) -> ProviderClients:
        """Clients for the keys and base URLs of ``settings``, as the processors build them."""
        return cls(
            deepgram=deepgram_client(
                settings.deepgram_api_key.get_secret_value(), settings.deepgram_base_url
            ),
            anthropic=anthropic_client(
                settings.anthropic_api_key.get_secret_value(), settings.anthropic_base_url
            ),
        )

    async def aclose(self) -> None:
        """Close the pooled HTTP connections (when the process stops serving calls)."""
        await self.anthropic.close()


@dataclass(slots=True)
class CallContext:
    """Everything a chain factory gets for one call."""

    call_id: str
    agent: AgentProfile
    transport: TwilioMediaTransport
    settings: Settings
    dynamic_vars: Mapping[str, str] = field(default_factory=dict)
    call_prompt: str | None = None
    history: Sequence[HistoryEntry] = ()
    voicemail_action: VoicemailAction | None = None
    voicemail_message: str | None = None
    clock: Clock | None = None
    clients: ProviderClients | None = None  # None: the call builds its own

    @property
    def system_prompt(self) -> str:
        """The agent's prompt + the call's purpose, variables filled in, then the history."""
        return build_system_prompt(
            self.agent.system_prompt,
            call_prompt=self.call_prompt,
            dynamic_vars=self.dynamic_vars,
            history=self.history,
        )

    @property
    def welcome_message(self) -> str:
        """The agent's opener with the call's variables filled in."""
        return interpolate(self.agent.welcome_message, self.dynamic_vars)

    @property
    def effective_voicemail_action(self) -> VoicemailAction:
        """The call's ``voicemail_action``, else the agent's."""
        return self.voicemail_action or self.agent.voicemail_action

    @property
    def effective_voicemail_message(self) -> str:
        """The call's ``voicemail_message``, else the agent's, variables filled in."""
        return interpolate(
            self.voicemail_message or self.agent.voicemail_message, self.dynamic_vars
        )


def build_standard_chain(ctx: CallContext) -> Pipeline:
    """The standard agent chain for ``ctx`` (input transport to assistant context)."""
    agent, settings = ctx.agent, ctx.settings
    dg: dict[str, Any] = {} if ctx.clients is None else {"client": ctx.clients.deepgram}
    llm: dict[str, Any] = {} if ctx.clients is None else {"client": ctx.clients.anthropic}
    return Pipeline(
        [
            ctx.transport.input(),
            MulawDecoder(),
            VADProcessor(),
            DeepgramSTT.from_settings(settings, language=agent.language or None, **dg),
            VoicemailProcessor(
                voicemail_action=ctx.effective_voicemail_action,
                voicemail_message=ctx.effective_voicemail_message,
                welcome_message=ctx.welcome_message,
                amd_enabled=agent.amd_enabled,
            ),
            TurnTakingProcessor(
                interruption_sensitivity=agent.interruption_sensitivity,
                silence_hangup_seconds=agent.silence_hangup_seconds,
                max_call_duration_seconds=agent.max_call_duration_seconds,
            ),
            UserContextAggregator(ctx.system_prompt),
            ClaudeLLM.from_settings(
                settings, model=agent.llm_model, max_tokens=agent.max_tokens, **llm
            ),
            DeepgramTTS.from_settings(settings, voice=agent.voice_id, **dg),
            ctx.transport.output(),
            AssistantContextAggregator(),
        ],
        name="agent",
    )


@dataclass(slots=True)
class CallPipeline:
    """A call's whole pipeline and the processors the session reads at the end."""

    pipeline: Pipeline
    metrics: TurnMetricsProcessor
    recorder: RecorderProcessor | None


def call_pipeline(chain: FrameProcessor, *, recording_path: Path | None) -> CallPipeline:
    """Wrap an agent chain with the latency figures and (unless ``None``) the recording."""
    metrics = TurnMetricsProcessor()
    recorder = RecorderProcessor(recording_path) if recording_path is not None else None
    tail: list[FrameProcessor] = [metrics] if recorder is None else [metrics, recorder]
    return CallPipeline(Pipeline([chain, *tail], name="call"), metrics, recorder)
