"""TurnDetector: scenario tests and properties over random event sequences."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nixflex_engine.processors.turns import (
    TurnDetector,
    TurnDiscard,
    TurnEnd,
    TurnEvent,
    looks_unfinished,
    same_utterance,
)


def ends(events: list[TurnEvent]) -> list[TurnEnd]:
    return [e for e in events if isinstance(e, TurnEnd) and not e.preemptive]


def test_final_after_vad_stop_ends_the_turn_at_once() -> None:
    d = TurnDetector()
    assert d.on_user_started(0) == []
    assert d.on_interim("I'd like to", 300) == []
    assert d.on_user_stopped(1000, speech_end_ms=800) == []
    [end] = d.on_final("I'd like to book a table.", 1150)
    assert end == TurnEnd("I'd like to book a table.", 800, 1150, reason="ready")
    assert d.next_deadline_ms() is None


def test_no_turn_while_the_caller_speaks_even_on_speech_final() -> None:
    d = TurnDetector()
    d.on_user_started(0)
    assert d.on_final("Hello there.", 500, speech_final=True) == []
    assert d.next_deadline_ms() is None
    [end] = d.on_user_stopped(900)
    assert end.text == "Hello there." and end.decided_ms == 900


def test_half_sentence_waits_and_continuation_joins_the_turn() -> None:
    d = TurnDetector(unfinished_wait_ms=1000)
    d.on_user_started(0)
    d.on_user_stopped(1000)
    assert d.on_final("I was wondering if.", 1100, speech_final=True) == []
    assert d.next_deadline_ms() == 2000
    assert d.on_timer(1500) == []
    d.on_user_started(1600)
    d.on_user_stopped(2500)
    [end] = d.on_final("you have a table tonight.", 2600)
    assert end.text == "I was wondering if. you have a table tonight."
    assert end.speech_end_ms == 2500


def test_half_sentence_ends_after_the_unfinished_wait() -> None:
    d = TurnDetector(unfinished_wait_ms=1000)
    d.on_user_started(0)
    d.on_user_stopped(1000)
    d.on_final("My number is, um,", 1100)
    [end] = d.on_timer(2000)
    assert end.reason == "unfinished_timeout" and end.text == "My number is, um,"


def test_utterance_end_ends_even_unfinished_text() -> None:
    d = TurnDetector()
    d.on_user_started(0)
    d.on_user_stopped(1000)
    d.on_final("and the", 1100)
    [end] = d.on_utterance_end(1300)
    assert end.reason == "utterance_end" and end.text == "and the"


def test_response_delay_is_counted_from_the_vad_stop() -> None:
    d = TurnDetector(response_delay_ms=300)
    d.on_user_started(0)
    d.on_user_stopped(1000)
    assert d.on_final("Yes please.", 1100) == []
    assert d.next_deadline_ms() == 1300
    [end] = d.on_timer(1300)
    assert end.decided_ms == 1300


def test_stt_grace_when_no_final_follows_the_stop() -> None:
    d = TurnDetector(stt_grace_ms=400)
    d.on_user_started(0)
    d.on_final("Sounds good.", 700)
    d.on_user_stopped(1000)
    assert d.next_deadline_ms() == 1400
    assert d.on_timer(1399) == []
    [end] = d.on_timer(1400)
    assert end.text == "Sounds good."


def test_max_wait_takes_the_interim_and_absorbs_its_late_final() -> None:
    d = TurnDetector(max_turn_wait_ms=2000)
    d.on_user_started(0)
    d.on_interim("can you call me back", 600)
    d.on_user_stopped(1000)
    assert d.next_deadline_ms() == 3000
    [end] = d.on_timer(3000)
    assert end.reason == "max_wait" and end.from_interim and end.text == "can you call me back"
    assert d.on_final("Can you call me back?", 3200, speech_final=True) == []
    assert d.pending_text == ""
    # The next speech is a new turn again.
    d.on_user_started(5000)
    d.on_user_stopped(5500)
    [end2] = d.on_final("Tomorrow.", 5600)
    assert end2.text == "Tomorrow."


def test_final_without_vad_stands_for_the_stop() -> None:
    d = TurnDetector()
    [end] = d.on_final("Okay.", 2000, end_ms=1900)
    assert end.speech_end_ms == 1900 and end.decided_ms == 2000


def test_stray_interim_without_vad_starts_nothing() -> None:
    d = TurnDetector()
    assert d.on_interim("the", 100) == []
    assert d.next_deadline_ms() is None


def test_hold_defers_the_turn_until_released() -> None:
    d = TurnDetector()
    d.set_hold(True, 0)
    d.on_user_started(0)
    d.on_user_stopped(500)
    assert d.on_final("Wait, what?", 600) == []
    assert d.next_deadline_ms() is None
    [end] = d.set_hold(False, 2000)
    assert end.text == "Wait, what?" and end.decided_ms == 2000


def test_clear_forgets_backchannels() -> None:
    d = TurnDetector()
    d.set_hold(True, 0)
    d.on_user_started(0)
    d.on_user_stopped(300)
    d.on_final("Uh-huh.", 400)
    d.clear()
    assert d.set_hold(False, 1000) == []


class TestPreemptive:
    def test_confirmed_by_the_same_final(self) -> None:
        d = TurnDetector(preemptive=True)
        d.on_user_started(0)
        d.on_interim("what time do you open", 500)
        [pre] = d.on_user_stopped(1000, speech_end_ms=900)
        assert pre.preemptive and pre.text == "what time do you open" and pre.from_interim
        assert d.preemptive_pending == "what time do you open"
        [end] = d.on_final("What time do you open?", 1150)
        assert not end.preemptive and end.text == "What time do you open?"
        assert same_utterance(pre.text, end.text) and end.speech_end_ms == 900

    def test_discarded_when_the_words_change(self) -> None:
        d = TurnDetector(preemptive=True)
        d.on_user_started(0)
        d.on_interim("what time do you", 500)
        [pre] = d.on_user_stopped(1000)
        out = d.on_final("What time do you close?", 1150)
        assert out == [
            TurnDiscard(pre.text, 1150),
            TurnEnd("What time do you close?", 1000, 1150, reason="ready"),
        ]

    def test_discarded_when_the_caller_goes_on(self) -> None:
        d = TurnDetector(preemptive=True, response_delay_ms=500)
        d.on_user_started(0)
        d.on_user_stopped(1000)
        [pre] = d.on_final("I need a taxi.", 1100)
        assert pre.preemptive
        assert d.on_user_started(1300) == [TurnDiscard("I need a taxi.", 1300)]
        d.on_user_stopped(2000)
        d.on_final("To the airport.", 2100)
        [end] = d.on_timer(2500)
        assert end.text == "I need a taxi. To the airport."

    def test_committed_when_the_reply_is_heard(self) -> None:
        d = TurnDetector(preemptive=True)
        d.on_user_started(0)
        d.on_interim("thanks bye", 400)
        [pre] = d.on_user_stopped(600)
        [end] = d.commit_preemptive(900)
        assert end.reason == "committed" and end.text == pre.text and end.from_interim
        assert d.on_final("Thanks, bye.", 1000) == []  # absorbed

    def test_no_preemptive_on_unfinished_words(self) -> None:
        d = TurnDetector(preemptive=True)
        d.on_user_started(0)
        d.on_interim("I want the", 400)
        assert d.on_user_stopped(600) == []


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        TurnDetector(response_delay_ms=3000, max_turn_wait_ms=2000)


def test_looks_unfinished_examples() -> None:
    assert looks_unfinished("I was wondering if")
    assert looks_unfinished("I was wondering if.")
    assert looks_unfinished("My name is,")
    assert looks_unfinished("Let me think…")
    assert looks_unfinished("Quiero reservar una mesa para")
    assert not looks_unfinished("Where are you calling from?")
    assert not looks_unfinished("Yes, that works.")
    assert not looks_unfinished("I'd like that.")  # common endings are not taken as cut
    assert not looks_unfinished("I think so.")
    assert not looks_unfinished("Ich mag das.")
    assert not looks_unfinished("")


# --- properties ----------------------------------------------------------------------------

PHRASES = [
    "Hello.",
    "I was wondering if",
    "yes",
    "book a table for two",
    "and",
    "uh-huh",
    "What time is it?",
    "my number is,",
    "",
]

step = st.one_of(
    st.tuples(st.just("start"), st.integers(0, 800)),
    st.tuples(st.just("stop"), st.integers(0, 800)),
    st.tuples(st.just("interim"), st.integers(0, 800), st.sampled_from(PHRASES)),
    st.tuples(st.just("final"), st.integers(0, 800), st.sampled_from(PHRASES), st.booleans()),
    st.tuples(st.just("utterance_end"), st.integers(0, 800)),
    st.tuples(st.just("wait"), st.integers(0, 3000)),
)


@dataclass
class Model:
    """What the detector must have seen, kept independently of it."""

    finals: list[str] = field(default_factory=list)
    interim: str = ""
    absorb: bool = False
    speaking: bool = False
    stop_at: float | None = None
    text_at: float = 0.0
    preempt: str | None = None


def run(
    detector: TurnDetector, steps: list[tuple], check
) -> tuple[Model, list[tuple[float, TurnEvent, Model]]]:
    """Drive the detector through ``steps``, firing its deadlines exactly on time."""
    now = 0.0
    model = Model()
    log: list[tuple[float, TurnEvent, Model]] = []

    def feed(events: list[TurnEvent], at: float) -> None:
        for e in events:
            check(e, at, model)
            log.append((at, e, model))
            if isinstance(e, TurnDiscard):
                model.preempt = None
            elif e.preemptive:
                model.preempt = e.text
            else:
                model.preempt = None
                if e.from_interim:
                    model.absorb = True
                model.finals, model.interim, model.stop_at = [], "", None

    def advance(to: float) -> None:
        nonlocal now
        while (deadline := detector.next_deadline_ms()) is not None and deadline <= to:
            at = max(deadline, now)
            feed(detector.on_timer(at), at)
            following = detector.next_deadline_ms()
            assert following is None or following > at, "a timer must make progress"
            now = at
        now = to

    for s in steps:
        advance(now + s[1])
        kind = s[0]
        if kind == "start":
            if model.speaking:
                continue
            model.speaking, model.absorb, model.stop_at = True, False, None
            feed(detector.on_user_started(now), now)
        elif kind == "stop":
            if not model.speaking:
                continue
            model.speaking, model.stop_at = False, now
            feed(detector.on_user_stopped(now), now)
        elif kind == "interim":
            if not model.absorb and s[2].strip():
                model.interim = s[2]
                model.text_at = now
            feed(detector.on_interim(s[2], now), now)
        elif kind == "final":
            if model.absorb:
                model.absorb = not s[3]
            else:
                if s[2].strip():
                    model.finals.append(s[2].strip())
                    model.text_at = now
                    if not model.speaking and model.stop_at is None:
                        model.stop_at = now
                model.interim = ""
            feed(detector.on_final(s[2], now, speech_final=s[3]), now)
        else:
            if not model.speaking and model.stop_at is None and (model.finals or model.interim):
                model.stop_at = now
            feed(detector.on_utterance_end(now), now)
    return model, log


def check_invariants(detector: TurnDetector):
    def check(e: TurnEvent, at: float, model: Model) -> None:
        if isinstance(e, TurnDiscard):
            assert model.preempt is not None and e.text == model.preempt
            return
        assert not model.speaking, "no turn ends while the VAD says the caller speaks"
        expected = [*model.finals, model.interim] if e.from_interim else list(model.finals)
        assert e.text == " ".join(p for p in expected if p), (e, model)
        if e.preemptive:
            assert model.preempt is None
            assert not looks_unfinished(e.text)
        else:
            assert model.stop_at is not None
            # At the latest max_turn_wait_ms after the VAD stop, or at once when the STT is
            # later than that.
            assert at <= max(model.stop_at + detector.max_turn_wait_ms, model.text_at)
            if model.preempt is not None:
                assert same_utterance(model.preempt, e.text), "a changed turn discards first"
            if e.reason == "ready":
                assert at >= model.stop_at + detector.response_delay_ms
                assert not looks_unfinished(e.text)

    return check


@settings(max_examples=300, deadline=None)
@given(
    st.lists(step, max_size=30),
    st.sampled_from([0, 200, 500]),
    st.booleans(),
)
def test_turn_text_is_exactly_the_finals_since_the_previous_turn(
    steps: list[tuple], response_delay_ms: int, preemptive: bool
) -> None:
    d = TurnDetector(response_delay_ms=response_delay_ms, preemptive=preemptive)
    model, _ = run(d, [*steps, ("stop", 10), ("wait", 5000)], check_invariants(d))
    # Liveness: once the caller has stopped, every final has been answered within the wait.
    assert model.finals == [] and d.pending_text == ""
    assert d.next_deadline_ms() is None
    # Every preemptive turn was confirmed or discarded.
    assert model.preempt is None


@settings(max_examples=200, deadline=None)
@given(st.lists(step, max_size=30))
def test_turn_ends_come_in_speech_order(steps: list[tuple]) -> None:
    d = TurnDetector(preemptive=True)
    _, log = run(d, [*steps, ("stop", 10), ("wait", 5000)], check_invariants(d))
    times = [at for at, e, _ in log]
    assert times == sorted(times)
    pending = None
    for _, e, _ in log:
        if isinstance(e, TurnDiscard):
            assert pending is not None
            pending = None
        elif e.preemptive:
            assert pending is None
            pending = e.text
        else:
            pending = None
