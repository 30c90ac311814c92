"""The conversation context: what the caller said, and what the agent said *as heard*.

Two processors, one on each side of the LLM → TTS → output transport stretch of the chain
(see docs/chain-contract.md):

:class:`UserContextAggregator` (after TurnTaking, before the LLM)
    Consumes: ``UserTurnEndedFrame`` (downstream), ``UserStartedSpeakingFrame`` (to date the
    caller's line), ``InterruptionFrame`` (downstream: rolls back a tentative turn), the
    agent's ``TranscriptEntryFrame`` travelling upstream, and a caller ``TranscriptEntryFrame``
    arriving downstream (the greeting the voicemail arbiter kept from turn taking; it joins
    the context by its time). Emits downstream:
    ``LLMContextFrame(messages, system, turn)``, ``TranscriptEntryFrame(role="caller")``;
    passes everything on (``UserTurnEndedFrame`` too, for the metrics at the chain's end).

:class:`AssistantContextAggregator` (after the output transport)
    Consumes (downstream): ``TTSStartedFrame``, ``TTSTextFrame``, ``OutputAudioFrame``,
    ``MarkFrame``, ``TTSStoppedFrame``, ``PlayedAudioFrame``, ``MarkPlayedFrame``,
    ``PlaybackClearedFrame``, ``BotStoppedSpeakingFrame``, ``InterruptionFrame`` and the end
    frames. Emits upstream: ``TranscriptEntryFrame(role="agent", text, timestamp_ms,
    interrupted)`` once a reply has been heard in full or cut; passes everything on.

The context (:class:`ConversationContext`, pure)
------------------------------------------------
A list of entries (caller or agent, text, time). Anthropic wants alternating roles starting
with the user, so :meth:`ConversationContext.messages` merges consecutive same-role entries
(joined by a newline) and, when the agent spoke first (the opener), starts with a short
user line, ``call_connected_note`` ("[The call connected.]"). An agent line that was cut by
the caller ends with ``interruption_note`` ("[interrupted by the caller]"), so the next
reply knows the caller did not hear the rest and may pick up from there; the transcript
keeps the bare heard text with ``interrupted=True`` instead. An agent line that arrives
after a caller line which started *after* the agent's audio began (a barge-in whose turn
ended before the cut line came back) is put before that caller line, so the order is the
order the caller lived. A cut reply the caller heard none of leaves no line at all.

Preemptive turns: a ``UserTurnEndedFrame(preemptive=True)`` adds a *tentative* caller line
and sends the LLM request at once. The confirming ``UserTurnEndedFrame`` with the same words
makes it final (text updated to the final transcript, transcript line sent, no new request);
an ``InterruptionFrame`` while it is tentative removes it (TurnTaking discarded it).

The opener (``welcome_message``) is spoken by whoever starts the conversation through a
``TTSSpeakFrame``; it enters the context like any agent line, when heard.

What was heard (:func:`heard_prefix`, :func:`heard_text`, pure)
---------------------------------------------------------------
A chunk whose mark came back (not ``cleared``) was heard in full. For the chunk playing when
playback was cleared, the heard milliseconds (from ``PlaybackClearedFrame.heard``) are mapped
onto its text proportionally to character positions, and only the words whose last
character was reached count: a word is never split. Chunk durations come from the audio
itself (``PlayedAudioFrame``, else ``OutputAudioFrame``: 8 bytes = 1 ms of mu-law 8 kHz); a
chunk whose audio was still arriving is at least ``ms_per_char`` per character long.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from nixflex_engine.frames import (
    BotStoppedSpeakingFrame,
    CancelFrame,
    EndCallFrame,
    EndFrame,
    Frame,
    InterruptionFrame,
    LLMContextFrame,
    MarkFrame,
    MarkPlayedFrame,
    OutputAudioFrame,
    PlaybackClearedFrame,
    PlayedAudioFrame,
    TranscriptEntryFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    UserTurnEndedFrame,
)
from nixflex_engine.log import get_logger, log_event
from nixflex_engine.pipeline.processor import DOWNSTREAM, UPSTREAM, FrameDirection, FrameProcessor
from nixflex_engine.processors.turns import same_utterance

__all__ = [
    "AssistantContextAggregator",
    "ChunkPlayback",
    "ContextEntry",
    "ConversationContext",
    "UserContextAggregator",
    "heard_prefix",
    "heard_text",
    "heard_text_at",
]

_log = get_logger(__name__)

_WORD_RE = re.compile(r"\S+")

#: Milliseconds of mu-law 8 kHz audio per byte.
MULAW_8K_MS_PER_BYTE = 1.0 / 8.0


# --- what was heard (pure) -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChunkPlayback:
    """One TTS chunk: its text, its audio's length, and how much of it the caller heard."""

    text: str
    duration_ms: float
    heard_ms: float


def heard_prefix(text: str, duration_ms: float, heard_ms: float) -> str:
    """The words of ``text`` heard after ``heard_ms`` of its ``duration_ms`` of audio.

    Proportional to character positions; a word counts once its last character is reached.
    Nothing at 0 ms, everything from ``duration_ms`` on, a whole-word prefix in between.
    """
    stripped = text.strip()
    if not stripped or heard_ms <= 0:
        return ""
    if heard_ms >= duration_ms:
        return stripped
    reached = heard_ms / duration_ms * len(stripped)
    end = 0
    for match in _WORD_RE.finditer(stripped):
        if match.end() > reached:
            break
        end = match.end()
    return stripped[:end]


def heard_text(chunks: Sequence[ChunkPlayback]) -> str:
    """The text the caller heard of a reply played chunk after chunk.

    Stops at the first chunk not heard in full: audio plays in order, so nothing after it
    was heard.
    """
    parts: list[str] = []
    for chunk in chunks:
        part = heard_prefix(chunk.text, chunk.duration_ms, chunk.heard_ms)
        if part:
            parts.append(part)
        if part != chunk.text.strip():
            break
    return " ".join(parts)


def heard_text_at(chunks: Sequence[tuple[str, float]], heard_ms: float) -> str:
    """The text heard after ``heard_ms`` of a reply whose chunks are ``(text, duration_ms)``."""
    playback: list[ChunkPlayback] = []
    start = 0.0
    for text, duration in chunks:
        end = start + duration
        heard = duration if heard_ms >= end else min(max(heard_ms - start, 0.0), duration)
        playback.append(ChunkPlayback(text, duration, heard))
        start = end
    return heard_text(playback)


# --- the conversation context (pure) ---------------------------------------------------------


@dataclass(slots=True)
class ContextEntry:
    """One line of the conversation as the LLM will see it."""

    role: Literal["user", "assistant"]
    text: str
    timestamp_ms: float
    interrupted: bool = False
    tentative: bool = False


class ConversationContext:
    """The system prompt and the conversation so far; builds Anthropic ``messages``."""

    __slots__ = ("_entries", "call_connected_note", "interruption_note", "system")

    def __init__(
        self,
        system: str,
        *,
        interruption_note: str = "[interrupted by the caller]",
        call_connected_note: str = "[The call connected.]",
    ) -> None:
        self.system = system
        self.interruption_note = interruption_note
        self.call_connected_note = call_connected_note
        self._entries: list[ContextEntry] = []

    @property
    def entries(self) -> list[ContextEntry]:
        """The entries, in conversation order (a copy)."""
        return list(self._entries)

    @property
    def tentative(self) -> ContextEntry | None:
        """The tentative (preemptive) caller line, if any."""
        for entry in reversed(self._entries):
            if entry.tentative:
                return entry
        return None

    def add_user(self, text: str, timestamp_ms: float, *, tentative: bool = False) -> None:
        """The caller said ``text`` (``tentative``: a preemptive turn, not yet confirmed)."""
        self._entries.append(ContextEntry("user", text, timestamp_ms, tentative=tentative))

    def confirm_tentative(self, text: str) -> bool:
        """Make the tentative caller line final, with ``text``; ``False`` if there is none."""
        entry = self.tentative
        if entry is None:
            return False
        entry.text = text
        entry.tentative = False
        return True

    def drop_tentative(self) -> bool:
        """Remove the tentative caller line; ``False`` if there is none."""
        for i in range(len(self._entries) - 1, -1, -1):
            if self._entries[i].tentative:
                del self._entries[i]
                return True
        return False

    def add_agent(self, text: str, timestamp_ms: float, *, interrupted: bool = False) -> None:
        """The caller heard the agent say ``text`` (its audio began at ``timestamp_ms``).

        Placed before the trailing caller lines that began after it, so the context follows
        what the caller lived, whatever order the lines arrive in.
        """
        if not text.strip():
            return
        index = len(self._entries)
        while (
            index > 0
            and self._entries[index - 1].role == "user"
            and self._entries[index - 1].timestamp_ms > timestamp_ms
        ):
            index -= 1
        self._entries.insert(
            index, ContextEntry("assistant", text.strip(), timestamp_ms, interrupted)
        )

    def add_heard_caller_line(self, text: str, timestamp_ms: float) -> None:
        """A caller line that did not come as a turn (the greeting the voicemail arbiter
        kept from turn taking): placed among the lines by its time."""
        if not text.strip():
            return
        index = len(self._entries)
        while index > 0 and self._entries[index - 1].timestamp_ms > timestamp_ms:
            index -= 1
        self._entries.insert(index, ContextEntry("user", text.strip(), timestamp_ms))

    def messages(self) -> tuple[dict[str, Any], ...]:
        """Anthropic messages: roles alternate, the first is the user's."""
        out: list[dict[str, Any]] = []
        for entry in self._entries:
            content = entry.text
            if entry.interrupted and self.interruption_note:
                content = f"{content} {self.interruption_note}"
            if out and out[-1]["role"] == entry.role:
                out[-1]["content"] = f"{out[-1]['content']}\n{content}"
            else:
                out.append({"role": entry.role, "content": content})
        if out and out[0]["role"] == "assistant":
            out.insert(0, {"role": "user", "content": self.call_connected_note})
        return tuple(out)


# --- user side -------------------------------------------------------------------------------


class UserContextAggregator(FrameProcessor):
    """Keeps the conversation context and asks the LLM for a reply at each caller turn."""

    __slots__ = ("_context", "_speech_start_ms", "_turn", "_user_speaking")

    def __init__(
        self,
        system_prompt: str,
        *,
        interruption_note: str = "[interrupted by the caller]",
        call_connected_note: str = "[The call connected.]",
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        self._context = ConversationContext(
            system_prompt,
            interruption_note=interruption_note,
            call_connected_note=call_connected_note,
        )
        self._turn = 0
        self._speech_start_ms: float | None = None  # first caller speech of the coming turn
        self._user_speaking = False

    @property
    def conversation(self) -> ConversationContext:
        """The conversation context."""
        return self._context

    @property
    def turn(self) -> int:
        """The number of the latest LLM request (0 before the first)."""
        return self._turn

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, UserTurnEndedFrame) and direction == DOWNSTREAM:
            await self._user_turn(frame)
            await self.push_frame(frame, direction)
            return
        if isinstance(frame, UserStartedSpeakingFrame):
            self._user_speaking = True
            if self._speech_start_ms is None:
                self._speech_start_ms = frame.start_ms or self.now_ms()
        elif isinstance(frame, UserStoppedSpeakingFrame):
            self._user_speaking = False
        elif isinstance(frame, InterruptionFrame) and direction == DOWNSTREAM:
            if self._context.drop_tentative():
                log_event(_log, "context.tentative_dropped", call_id=self.call_id)
        elif (
            isinstance(frame, TranscriptEntryFrame)
            and direction == DOWNSTREAM
            and frame.role == "caller"
        ):
            # Our own caller lines leave from here; one arriving is the greeting the voicemail
            # arbiter held back from turn taking ("Hello? Who is this?"), which the next reply
            # should know about.
            self._context.add_heard_caller_line(frame.text, frame.timestamp_ms)
        elif (
            isinstance(frame, TranscriptEntryFrame)
            and direction == UPSTREAM
            and frame.role == "agent"
        ):
            self._context.add_agent(frame.text, frame.timestamp_ms, interrupted=frame.interrupted)
            if not self._user_speaking:
                # Caller sounds before this agent line (backchannels over it) do not date the
                # caller's next line; a barge-in still going on does.
                self._speech_start_ms = None
        await self.push_frame(frame, direction)

    async def _user_turn(self, frame: UserTurnEndedFrame) -> None:
        text = frame.text.strip()
        if not text:
            return
        started = (
            self._speech_start_ms if self._speech_start_ms is not None else frame.speech_end_ms
        )
        tentative = self._context.tentative
        if frame.preemptive:
            if tentative is not None:
                self._context.drop_tentative()
            self._context.add_user(text, started, tentative=True)
            await self._request()
            return
        if tentative is not None and same_utterance(tentative.text, text):
            self._context.confirm_tentative(text)
        else:
            if tentative is not None:
                self._context.drop_tentative()
            self._context.add_user(text, started)
            await self._request()
        self._speech_start_ms = None
        await self.push_frame(TranscriptEntryFrame(role="caller", text=text, timestamp_ms=started))

    async def _request(self) -> None:
        self._turn += 1
        await self.push_frame(
            LLMContextFrame(
                messages=self._context.messages(), system=self._context.system, turn=self._turn
            )
        )


# --- assistant side --------------------------------------------------------------------------


@dataclass(slots=True)
class _Chunk:
    chunk_id: str
    text: str
    output_ms: float = 0.0
    played_ms: float = 0.0
    first_play_at_ms: float | None = None
    complete: bool = False  # all its audio has been produced
    heard: bool = False  # its mark came back, not cleared


@dataclass(slots=True)
class _Reply:
    chunks: list[_Chunk] = field(default_factory=list)
    stopped: bool = False  # TTSStoppedFrame: no more chunks
    interrupted: bool = False
    start_ms: float | None = None  # when its first audio was scheduled to play

    @property
    def played_any(self) -> bool:
        return any(c.played_ms > 0 or c.heard for c in self.chunks)


class AssistantContextAggregator(FrameProcessor):
    """Turns what the caller heard of each agent reply into an agent transcript line."""

    __slots__ = ("_anonymous", "_by_id", "_replies", "ms_per_char")

    def __init__(self, *, ms_per_char: float = 60.0, name: str | None = None) -> None:
        super().__init__(name=name)
        self.ms_per_char = ms_per_char
        self._replies: list[_Reply] = []
        self._by_id: dict[str, tuple[_Reply, _Chunk]] = {}
        self._anonymous = 0

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if direction == DOWNSTREAM:
            await self._handle(frame)
        await self.push_frame(frame, direction)

    async def _handle(self, frame: Frame) -> None:
        if isinstance(frame, PlayedAudioFrame):
            found = self._chunk(frame.chunk_id)
            if found is not None:
                reply, chunk = found
                chunk.played_ms += len(frame.audio) * MULAW_8K_MS_PER_BYTE
                if chunk.first_play_at_ms is None:
                    chunk.first_play_at_ms = frame.play_at_ms
                if reply.start_ms is None or frame.play_at_ms < reply.start_ms:
                    reply.start_ms = frame.play_at_ms
        elif isinstance(frame, OutputAudioFrame):
            found = self._chunk(frame.chunk_id)
            if found is not None:
                bytes_per_ms = frame.sample_rate / 1000.0 * (2 if frame.encoding == "pcm16" else 1)
                found[1].output_ms += len(frame.audio) / bytes_per_ms
        elif isinstance(frame, TTSTextFrame):
            self._add_chunk(frame)
        elif isinstance(frame, TTSStartedFrame):
            if not self._replies or self._replies[-1].chunks or self._replies[-1].interrupted:
                self._replies.append(_Reply())
        elif isinstance(frame, MarkFrame):
            found = self._by_id.get(frame.name)
            if found is not None:
                found[1].complete = True
        elif isinstance(frame, MarkPlayedFrame):
            found = self._by_id.get(frame.name)
            if found is not None and not frame.cleared:
                found[1].heard = True
                found[1].complete = True
                await self._finish_heard()
        elif isinstance(frame, TTSStoppedFrame):
            if self._replies and not self._replies[-1].interrupted:
                reply = self._replies[-1]
                reply.stopped = True
                for chunk in reply.chunks:
                    chunk.complete = True
                await self._finish_heard()
        elif isinstance(frame, PlaybackClearedFrame):
            await self._cleared(frame.heard, frame.at_ms)
        elif isinstance(frame, InterruptionFrame):
            for reply in list(self._replies):
                reply.interrupted = True
                if not reply.played_any:
                    self._forget(reply)
        elif isinstance(frame, BotStoppedSpeakingFrame):
            at = frame.at_ms or self.now_ms()
            for reply in list(self._replies):
                if reply.interrupted:
                    await self._finish(reply, self._estimate(reply, at), interrupted=True)
                elif reply.stopped:
                    await self._finish(reply, self._full(reply), interrupted=False)
        elif isinstance(frame, EndFrame | EndCallFrame | CancelFrame):
            now = self.now_ms()
            for reply in list(self._replies):
                if reply.stopped and all(c.heard for c in reply.chunks):
                    await self._finish(reply, self._full(reply), interrupted=False)
                elif reply.played_any:
                    await self._finish(reply, self._estimate(reply, now), interrupted=True)
                else:
                    self._forget(reply)

    # --- bookkeeping -----------------------------------------------------------------------

    def _chunk(self, chunk_id: str) -> tuple[_Reply, _Chunk] | None:
        if chunk_id:
            return self._by_id.get(chunk_id)
        for reply in reversed(self._replies):  # no id: the latest chunk
            if reply.chunks:
                return reply, reply.chunks[-1]
        return None

    def _add_chunk(self, frame: TTSTextFrame) -> None:
        if not self._replies or self._replies[-1].stopped or self._replies[-1].interrupted:
            self._replies.append(_Reply())
        reply = self._replies[-1]
        if reply.chunks:
            reply.chunks[-1].complete = True
        chunk_id = frame.chunk_id
        if not chunk_id:
            self._anonymous += 1
            chunk_id = f"_chunk{self._anonymous}"
        chunk = _Chunk(chunk_id, frame.text)
        reply.chunks.append(chunk)
        self._by_id[chunk_id] = (reply, chunk)

    def _duration(self, chunk: _Chunk) -> float:
        known = chunk.played_ms or chunk.output_ms
        if chunk.complete and known > 0:
            return known
        return max(known, len(chunk.text.strip()) * self.ms_per_char)

    def _full(self, reply: _Reply) -> list[ChunkPlayback]:
        return [ChunkPlayback(c.text, 1.0, 1.0) for c in reply.chunks]

    def _estimate(self, reply: _Reply, at_ms: float) -> list[ChunkPlayback]:
        """What was heard by ``at_ms``: confirmed chunks, then the playing one by time."""
        out = []
        for c in reply.chunks:
            duration = self._duration(c)
            if c.heard:
                heard = duration
            elif c.first_play_at_ms is not None:
                heard = min(max(at_ms - c.first_play_at_ms, 0.0), c.played_ms or duration)
            else:
                heard = 0.0
            out.append(ChunkPlayback(c.text, duration, heard))
        return out

    async def _cleared(self, heard: dict[str, float], at_ms: float) -> None:
        for reply in list(self._replies):
            if not reply.played_any:
                if reply.interrupted:
                    self._forget(reply)
                continue
            playback = []
            for c in reply.chunks:
                duration = self._duration(c)
                if c.heard:
                    ms = duration
                elif c.chunk_id in heard:
                    ms = heard[c.chunk_id]
                else:
                    ms = 0.0
                playback.append(ChunkPlayback(c.text, duration, ms))
            await self._finish(reply, playback, interrupted=True)

    async def _finish_heard(self) -> None:
        for reply in list(self._replies):
            if reply.stopped and not reply.interrupted and reply.chunks:
                if all(c.heard for c in reply.chunks):
                    await self._finish(reply, self._full(reply), interrupted=False)

    def _forget(self, reply: _Reply) -> None:
        if reply in self._replies:
            self._replies.remove(reply)
        for chunk in reply.chunks:
            self._by_id.pop(chunk.chunk_id, None)

    async def _finish(
        self, reply: _Reply, playback: list[ChunkPlayback], *, interrupted: bool
    ) -> None:
        self._forget(reply)
        text = heard_text(playback)
        if interrupted and reply.stopped and text == heard_text(self._full(reply)):
            interrupted = False  # cut after its very last word: the caller heard it all
        if not text:
            return
        timestamp = reply.start_ms if reply.start_ms is not None else self.now_ms()
        await self.push_frame(
            TranscriptEntryFrame(
                role="agent", text=text, timestamp_ms=timestamp, interrupted=interrupted
            ),
            UPSTREAM,
        )
