"""A custom processor: a keyword spotter that emits a frame and changes the agent's next reply.

:class:`KeywordSpotter` sits between the ``UserContextAggregator`` and the LLM. For each
``LLMContextFrame`` (one per caller turn) it looks for its keywords in the caller's last
message. On a hit it emits a :class:`KeywordSpottedFrame` (a ``SystemFrame``: anyone
downstream, and the session's observers, see it) and appends a note for the model to that
message — so this reply, and only this one, follows the note. Every other frame passes
through untouched, in its direction.

:func:`build` is a *chain factory*: the standard chain with the spotter inserted. Run it
against the sandbox callee with ``python -m examples.keyword_spotter``, or name it as an
agent's ``chain_factory`` (``examples.keyword_spotter:build``) to run it on the engine —
see ``examples/engine_keyword_spotter.py`` and ``docs/running-on-the-engine.md``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nixflex_engine.calls.chain import AgentProfile, CallContext, build_standard_chain
from nixflex_engine.frames import Frame, LLMContextFrame, SystemFrame
from nixflex_engine.pipeline import DOWNSTREAM, FrameDirection, FrameProcessor, Pipeline
from nixflex_engine.processors import UserContextAggregator
from nixflex_engine.sandbox import (
    AnthropicSettings,
    FakeAnthropic,
    Say,
    Silence,
    Step,
    UntilAgentSilent,
)

__all__ = ["CANCEL_NOTE", "KeywordSpottedFrame", "KeywordSpotter", "build", "main", "spot"]

CANCEL_NOTE = (
    "[Note: the caller wants to cancel. Confirm the appointment is cancelled, "
    "then say goodbye and end the call.]"
)


@dataclass(frozen=True, slots=True)
class KeywordSpottedFrame(SystemFrame):
    """The caller said ``keyword`` in turn ``turn`` (``text``: their whole message)."""

    keyword: str
    text: str
    turn: int


def spot(text: str, keywords: Mapping[str, str]) -> list[str]:
    """The keywords (whole words, any case) that occur in ``text``, in ``keywords`` order."""
    return [k for k in keywords if re.search(rf"\b{re.escape(k)}\b", text, re.IGNORECASE)]


def _last_user_text(messages: tuple[dict[str, Any], ...]) -> tuple[int, str] | None:
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].get("role") == "user" and isinstance(messages[i].get("content"), str):
            return i, str(messages[i]["content"])
    return None


class KeywordSpotter(FrameProcessor):
    """Spots keywords in the caller's turns; emits :class:`KeywordSpottedFrame` and adds the
    keyword's note to the LLM request of that turn.

    ``notes``: keyword → the note the model gets when the caller says it.
    """

    def __init__(self, notes: Mapping[str, str], *, name: str | None = None) -> None:
        super().__init__(name=name)
        self.notes = dict(notes)
        self.spotted: list[KeywordSpottedFrame] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, LLMContextFrame) and direction == DOWNSTREAM:
            frame = await self._spot(frame)
        await self.push_frame(frame, direction)

    async def _spot(self, frame: LLMContextFrame) -> LLMContextFrame:
        last = _last_user_text(frame.messages)
        if last is None:
            return frame
        index, text = last
        hits = spot(text, self.notes)
        if not hits:
            return frame
        for keyword in hits:
            found = KeywordSpottedFrame(keyword=keyword, text=text, turn=frame.turn)
            self.spotted.append(found)
            await self.push_frame(found)
        notes = "\n".join(self.notes[k] for k in hits)
        messages = list(frame.messages)
        messages[index] = {**messages[index], "content": f"{text}\n{notes}"}
        # Frames are immutable: send a changed copy on.
        return dataclasses.replace(frame, messages=tuple(messages))


def build(ctx: CallContext) -> Pipeline:
    """The standard chain for ``ctx`` with a :class:`KeywordSpotter` for "cancel" after the
    user context aggregator (a chain factory: the engine calls it for each call)."""
    processors = build_standard_chain(ctx).processors
    at = next(i for i, p in enumerate(processors) if isinstance(p, UserContextAggregator))
    spotter = KeywordSpotter({"cancel": CANCEL_NOTE})
    return Pipeline([*processors[: at + 1], spotter, *processors[at + 1 :]], name="agent+keywords")


#: The agent of the example call, and the person it calls.
AGENT = AgentProfile(
    system_prompt="You are Anna from Riverside Clinic, confirming {name}'s appointment.",
    welcome_message="Hi {name}, it's Anna.",
    amd_enabled=False,  # no carrier here: a person is told from the greeting alone
)
CALLEE: list[Step] = [
    Say("Hello?"),
    UntilAgentSilent(silence_ms=500),
    Say("Please cancel it."),
    UntilAgentSilent(silence_ms=500),
    Silence(3000),  # the agent hangs up meanwhile (a slow machine must not make it the callee)
]


def fake_model() -> FakeAnthropic:
    """The sandbox model: it confirms a cancellation only when the spotter's note asks it to
    (without the note it answers with its default persona)."""
    fake = FakeAnthropic(AnthropicSettings(ttft_ms=150, tokens_per_s=200))
    fake.add_rule(r"\[Note: the caller wants to cancel", "Done, it is cancelled. Bye! [END_CALL]")
    return fake


async def run_example() -> Any:
    """Call the sandbox callee with :func:`build`; returns the harness's ``SandboxCall``."""
    from examples.sandbox_call import call_sandbox_callee

    return await call_sandbox_callee(
        build, CALLEE, agent=AGENT, dynamic_vars={"name": "Sarah"}, anthropic=fake_model()
    )


def main() -> None:
    """Run the example call and print the transcript and the spotted keywords."""
    call = asyncio.run(run_example())
    print("ended:", call.outcome.ended_reason)
    for line in call.outcome.transcript:
        print(f"  {line.role:>6}: {line.text}")
    for frame in call.frames:
        if isinstance(frame, KeywordSpottedFrame):
            print(f"spotted {frame.keyword!r} in turn {frame.turn}: {frame.text!r}")


if __name__ == "__main__":
    main()
