"""What the caller heard of a reply: whole words only, monotone, full and empty ends."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from nixflex_engine.processors.context import (
    ChunkPlayback,
    heard_prefix,
    heard_text,
    heard_text_at,
)

texts = st.text(alphabet=st.sampled_from("abcde fgh.,!?'\n"), max_size=60)
durations = st.floats(1, 10_000)


def is_word_prefix(prefix: str, text: str) -> bool:
    """``prefix`` is ``text`` cut right after a word (or nothing)."""
    full = text.strip()
    if prefix == "":
        return True
    return full.startswith(prefix) and (len(prefix) == len(full) or full[len(prefix)].isspace())


def test_examples() -> None:
    text = "Your appointment is on Tuesday at two."
    assert heard_prefix(text, 3000, 0) == ""
    assert heard_prefix(text, 3000, 3000) == text
    assert heard_prefix(text, 3000, 1500) == "Your appointment is"
    assert heard_prefix(text, 3000, 1499) == "Your appointment"
    chunks = [("Hi Sarah.", 800.0), ("I'm calling about Tuesday.", 1600.0), ("Is 2pm ok?", 900)]
    assert heard_text_at(chunks, 799) == "Hi"
    assert heard_text_at(chunks, 800) == "Hi Sarah."
    assert heard_text_at(chunks, 800 + 900) == "Hi Sarah. I'm calling"
    assert heard_text_at(chunks, 800 + 1100) == "Hi Sarah. I'm calling about"
    assert heard_text_at(chunks, 10_000) == "Hi Sarah. I'm calling about Tuesday. Is 2pm ok?"


def test_partial_chunk_stops_the_reply() -> None:
    played = [ChunkPlayback("One two.", 100, 50), ChunkPlayback("Three.", 100, 100)]
    assert heard_text(played) == "One"


@given(texts, durations, st.floats(-100, 20_000))
def test_prefix_is_whole_words(text: str, duration: float, heard: float) -> None:
    out = heard_prefix(text, duration, heard)
    assert is_word_prefix(out, text)
    assert not re.search(r"\s$", out)


@given(texts, durations, st.floats(0, 20_000), st.floats(0, 20_000))
def test_prefix_is_monotone(text: str, duration: float, a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    assert heard_prefix(text, duration, hi).startswith(heard_prefix(text, duration, lo))


@given(texts, durations)
def test_prefix_ends(text: str, duration: float) -> None:
    assert heard_prefix(text, duration, 0) == ""
    assert heard_prefix(text, duration, duration) == text.strip()
    assert heard_prefix(text, duration, duration * 2) == text.strip()


chunk_lists = st.lists(st.tuples(texts, durations), max_size=6)


@given(chunk_lists, st.floats(0, 60_000), st.floats(0, 60_000))
def test_reply_is_monotone_and_whole_words(
    chunks: list[tuple[str, float]], a: float, b: float
) -> None:
    lo, hi = sorted((a, b))
    full = " ".join(t.strip() for t, _ in chunks if t.strip())
    small, big = heard_text_at(chunks, lo), heard_text_at(chunks, hi)
    assert big.startswith(small)
    assert is_word_prefix(big, full)


@given(chunk_lists)
def test_reply_ends(chunks: list[tuple[str, float]]) -> None:
    full = " ".join(t.strip() for t, _ in chunks if t.strip())
    assert heard_text_at(chunks, 0) == ""
    assert heard_text_at(chunks, sum(d for _, d in chunks)) == full
