"""BargeInPolicy and the word lists: scenarios and properties."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from nixflex_engine.processors.turns import (
    BACKCHANNEL_WORDS,
    BargeInPolicy,
    content_words,
    interruption_min_words,
    interruption_threshold_ms,
    is_backchannel,
)

BACKCHANNELS = [
    "uh-huh",
    "Yeah.",
    "mm-hmm",
    "Okay.",
    "Right.",
    "Yeah, yeah.",
    "Oui.",
    "Genau.",
    "Sí, vale.",
]


def speak(policy: BargeInPolicy, start: float, duration: float) -> float | None:
    """Caller speech from ``start`` for ``duration`` ms with no transcript: when it interrupts."""
    fired = policy.on_user_started(start, start)
    if fired:
        return start
    deadline = policy.deadline_ms()
    if deadline is not None and deadline <= start + duration:
        if policy.on_timer(deadline):
            policy.on_user_stopped(start + duration)
            return deadline
    policy.on_user_stopped(start + duration)
    return None


def test_mapping_documented_points() -> None:
    assert interruption_threshold_ms(0) is None and interruption_min_words(0) is None
    assert interruption_threshold_ms(100) == 150
    assert interruption_threshold_ms(50) == 400
    assert 1000 < interruption_threshold_ms(1) < 1100  # type: ignore[operator]
    assert [interruption_min_words(s) for s in (1, 33, 34, 66, 67, 100)] == [3, 3, 2, 2, 1, 1]


@given(st.floats(0.5, 100), st.floats(0.5, 100))
def test_more_sensitive_means_easier_to_interrupt(a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    assert interruption_threshold_ms(hi) <= interruption_threshold_ms(lo)  # type: ignore[operator]
    assert interruption_min_words(hi) <= interruption_min_words(lo)  # type: ignore[operator]
    assert 150 <= interruption_threshold_ms(hi) <= 1100  # type: ignore[operator]


def test_speech_over_the_agent_interrupts_at_the_threshold() -> None:
    p = BargeInPolicy(interruption_sensitivity=50)
    p.set_agent_active(True, 0)
    assert not p.on_user_started(1000, 1080)  # the VAD reports the start 80 ms late
    assert p.deadline_ms() == 1400
    assert not p.on_timer(1399)
    assert p.on_timer(1400)
    assert p.deadline_ms() is None and not p.on_timer(1500)  # once per stretch of speech


def test_late_vad_report_interrupts_at_once() -> None:
    p = BargeInPolicy(interruption_sensitivity=100)
    p.set_agent_active(True, 0)
    assert p.on_user_started(1000, 1200)


def test_speech_started_before_the_agent_counts_from_the_agent() -> None:
    p = BargeInPolicy(interruption_sensitivity=50)
    p.on_user_started(0, 0)
    assert not p.set_agent_active(True, 1000)
    assert p.deadline_ms() == 1400


def test_short_cough_does_not_interrupt() -> None:
    p = BargeInPolicy(interruption_sensitivity=50)
    p.set_agent_active(True, 0)
    assert speak(p, 1000, 250) is None


def test_words_interrupt_before_the_duration() -> None:
    p = BargeInPolicy(interruption_sensitivity=50)
    p.set_agent_active(True, 0)
    p.on_user_started(1000, 1000)
    assert not p.on_transcript("wait", 1200)
    assert p.on_transcript("wait stop", 1300)


def test_backchannels_never_interrupt_however_long() -> None:
    p = BargeInPolicy(interruption_sensitivity=100)
    p.set_agent_active(True, 0)
    p.on_user_started(1000, 1000)
    assert not p.on_transcript("yeah", 1100)
    assert not p.on_timer(1150)  # the threshold passed with only a backchannel heard
    assert p.deadline_ms() is None  # nothing to wake up for: no spinning timer
    assert not p.on_transcript("yeah yeah okay", 2500)
    assert p.on_transcript("yeah okay but no", 2600)


def test_backchannel_then_real_words_interrupt_on_duration() -> None:
    p = BargeInPolicy(interruption_sensitivity=10, min_words=5)
    p.set_agent_active(True, 0)
    p.on_user_started(0, 0)
    p.on_transcript("okay", 300)
    assert not p.on_timer(p.deadline_ms())  # type: ignore[arg-type]
    assert p.on_transcript("okay so", 1500)


def test_nothing_interrupts_an_inactive_agent_or_sensitivity_zero() -> None:
    p = BargeInPolicy(interruption_sensitivity=50)
    assert speak(p, 0, 5000) is None
    assert not p.on_transcript("please stop talking now", 100)
    z = BargeInPolicy(interruption_sensitivity=0)
    z.set_agent_active(True, 0)
    assert speak(z, 0, 10_000) is None
    z.on_user_started(20_000, 20_000)
    assert not z.on_transcript("stop stop stop stop", 20_500)


def test_transcript_of_speech_before_the_agent_does_not_interrupt() -> None:
    p = BargeInPolicy(interruption_sensitivity=100)
    p.on_user_started(0, 0)
    p.on_user_stopped(800)
    p.set_agent_active(True, 1000)
    assert not p.on_transcript("this is what I said before", 1100)


def test_late_transcript_of_overlapping_speech_still_counts() -> None:
    p = BargeInPolicy(interruption_sensitivity=80)
    p.set_agent_active(True, 0)
    p.on_user_started(1000, 1000)
    p.on_user_stopped(1150)  # shorter than the threshold
    assert p.on_transcript("Stop.", 1400)


def test_backchannel_words() -> None:
    for text in BACKCHANNELS:
        assert is_backchannel(text), text
        assert content_words(text) == 0
    assert not is_backchannel("")
    assert not is_backchannel("no, that's wrong")
    assert content_words("Wait, I have a question") == 4
    assert "mm-hmm" in BACKCHANNEL_WORDS


@settings(max_examples=200)
@given(
    st.integers(1, 100),
    st.lists(st.tuples(st.integers(0, 3000), st.integers(0, 2000)), max_size=8),
)
def test_duration_rule(sensitivity: int, stretches: list[tuple[int, int]]) -> None:
    """Silent-transcript speech over the agent interrupts iff it lasts the threshold."""
    p = BargeInPolicy(interruption_sensitivity=sensitivity)
    threshold = interruption_threshold_ms(sensitivity)
    assert threshold is not None
    p.set_agent_active(True, 0)
    t = 10.0
    for gap, duration in stretches:
        start = t + gap
        fired = speak(p, start, duration)
        if duration >= threshold:
            assert fired is not None and abs(fired - (start + threshold)) < 1e-6
        else:
            assert fired is None
        t = start + duration


@settings(max_examples=200)
@given(
    st.integers(0, 100),
    st.lists(st.sampled_from(BACKCHANNELS), min_size=1, max_size=6),
    st.integers(100, 5000),
)
def test_backchannels_alone_never_interrupt(
    sensitivity: int, said: list[str], duration: int
) -> None:
    p = BargeInPolicy(interruption_sensitivity=sensitivity)
    p.set_agent_active(True, 0)
    p.on_user_started(100, 100)
    step = duration / len(said)
    fired = False
    for i in range(len(said)):
        now = 100 + step * (i + 0.5)
        fired |= p.on_transcript(" ".join(said[: i + 1]), now)
        deadline = p.deadline_ms()
        if deadline is not None and deadline <= now:
            fired |= p.on_timer(now)
    # Whatever was heard first, backchannels only: the duration rule may only fire before any
    # transcript arrived (VAD timing alone), never after.
    first_transcript_at = 100 + step * 0.5
    threshold = interruption_threshold_ms(sensitivity)
    if threshold is None or 100 + threshold > first_transcript_at:
        assert not fired


@settings(max_examples=200)
@given(
    st.integers(1, 100),
    st.lists(st.sampled_from(["please", "stop", "wait", "uh", "yeah", "I", "need"]), max_size=8),
)
def test_word_rule(sensitivity: int, said: list[str]) -> None:
    p = BargeInPolicy(interruption_sensitivity=sensitivity, min_speech_ms=10_000)
    p.set_agent_active(True, 0)
    p.on_user_started(0, 0)
    need = interruption_min_words(sensitivity)
    assert need is not None
    fired_at = None
    for i in range(len(said)):
        if p.on_transcript(" ".join(said[: i + 1]), 100 + i) and fired_at is None:
            fired_at = i
    counts = [content_words(" ".join(said[: i + 1])) for i in range(len(said))]
    expected = next((i for i, c in enumerate(counts) if c >= need), None)
    assert fired_at == expected
