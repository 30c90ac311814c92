"""Swap a provider behind its interface: an LLM that answers from local rules, no API at all.

:class:`RulesLLM` subclasses :class:`~nixflex_engine.processors.LLMService`, the
provider-neutral LLM processor. The base class does everything a chain relies on — starts a
reply per ``LLMContextFrame``, emits ``LLMResponseStartFrame`` / ``LLMTextFrame`` /
``LLMResponseEndFrame``, measures ``llm_ttft_ms``, cancels the reply on barge-in, retries
before the first token, apologises and hangs up when it gives up. A provider implements two
methods:

- ``stream_reply(frame)`` — an async generator yielding text deltas (and optionally
  ``LLMUsage``); closing it must close the request;
- ``retry_hint(exc)`` — whether a failure is worth another attempt.

The same shape swaps STT (:class:`~nixflex_engine.processors.SpeechToText`, open an
``STTConnection``) or TTS (:class:`~nixflex_engine.processors.TextToSpeech`, open a
``TTSConnection``). Run against the sandbox callee::

    python -m examples.custom_llm
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from nixflex_engine.calls.chain import AgentProfile, CallContext
from nixflex_engine.frames import LLMContextFrame
from nixflex_engine.pipeline import Pipeline
from nixflex_engine.processors import (
    AssistantContextAggregator,
    DeepgramSTT,
    DeepgramTTS,
    LLMService,
    LLMUsage,
    MulawDecoder,
    RetryHint,
    TurnTakingProcessor,
    UserContextAggregator,
    VADProcessor,
    VoicemailProcessor,
)
from nixflex_engine.sandbox import Say, Silence, Step, UntilAgentSilent

__all__ = ["RULES", "RulesLLM", "build", "main"]

#: (regex on the caller's last message, the reply). ``[END_CALL]`` hangs up after the reply.
RULES: tuple[tuple[str, str], ...] = (
    (r"\bhours?\b|\bopen\b", "We are open nine to five. Goodbye! [END_CALL]"),
    (r"\b(bye|goodbye)\b", "Thanks for calling. Goodbye! [END_CALL]"),
)
FALLBACK = "Sorry, could you say that again?"


class RulesLLM(LLMService):
    """Replies with the first rule whose regex matches the caller's last message, streamed
    word by word (``word_delay_ms`` apart, like tokens arriving)."""

    def __init__(
        self,
        rules: Sequence[tuple[str, str]] = RULES,
        *,
        fallback: str = FALLBACK,
        word_delay_ms: float = 20.0,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        self.rules = [(re.compile(p, re.IGNORECASE), reply) for p, reply in rules]
        self.fallback = fallback
        self.word_delay_ms = word_delay_ms

    def reply_for(self, text: str) -> str:
        """The reply to the caller's ``text`` (pure: the rules, else the fallback)."""
        return next((reply for rx, reply in self.rules if rx.search(text)), self.fallback)

    async def stream_reply(self, frame: LLMContextFrame) -> AsyncGenerator[str | LLMUsage, None]:
        last: Any = next(
            (m["content"] for m in reversed(frame.messages) if m.get("role") == "user"), ""
        )
        reply = self.reply_for(last if isinstance(last, str) else "")
        words = reply.split(" ")
        yield LLMUsage(input_tokens=len(str(frame.messages)) // 4)
        for i, word in enumerate(words):
            await asyncio.sleep(self.word_delay_ms / 1000)
            yield word if i == 0 else " " + word
        yield LLMUsage(input_tokens=len(str(frame.messages)) // 4, output_tokens=len(words))

    def retry_hint(self, exc: BaseException) -> RetryHint:
        return RetryHint(retryable=False)  # nothing remote to retry


def build(ctx: CallContext) -> Pipeline:
    """The standard chain, composed by hand, with :class:`RulesLLM` in the LLM's place."""
    settings, agent = ctx.settings, ctx.agent
    return Pipeline(
        [
            ctx.transport.input(),
            MulawDecoder(),
            VADProcessor(),
            DeepgramSTT.from_settings(settings, language=agent.language),
            VoicemailProcessor(
                voicemail_action=ctx.effective_voicemail_action,
                voicemail_message=ctx.effective_voicemail_message,
                welcome_message=ctx.welcome_message,
                amd_enabled=agent.amd_enabled,
            ),
            TurnTakingProcessor(interruption_sensitivity=agent.interruption_sensitivity),
            UserContextAggregator(ctx.system_prompt),
            RulesLLM(),  # ← the swapped provider
            DeepgramTTS.from_settings(settings, voice=agent.voice_id),
            ctx.transport.output(),
            AssistantContextAggregator(),
        ],
        name="rules-agent",
    )


AGENT = AgentProfile(welcome_message="Riverside Clinic, hello.", amd_enabled=False)
CALLEE: list[Step] = [
    Say("Hi?"),
    UntilAgentSilent(silence_ms=500),
    Say("When are you open?"),
    UntilAgentSilent(silence_ms=500),
    Silence(3000),  # the agent hangs up meanwhile (a slow machine must not make it the callee)
]


async def run_example() -> Any:
    """Call the sandbox callee with :func:`build`; returns the harness's ``SandboxCall``."""
    from examples.sandbox_call import call_sandbox_callee

    return await call_sandbox_callee(build, CALLEE, agent=AGENT)


def main() -> None:
    """Run the example call and print the transcript."""
    call = asyncio.run(run_example())
    print("ended:", call.outcome.ended_reason)
    for line in call.outcome.transcript:
        print(f"  {line.role:>6}: {line.text}")


if __name__ == "__main__":
    main()
