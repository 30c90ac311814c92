"""The streaming sentence/clause chunker and the [END_CALL] tag (pure)."""

from __future__ import annotations

import itertools
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from nixflex_engine.processors.text import END_CALL_TAG, SentenceChunker, strip_end_call


def run(text: str, cuts: list[int] | int = 3, **kw: int | bool) -> tuple[list[str], bool]:
    """Feed ``text`` split at ``cuts`` (or in pieces of that size); all chunks and end_call."""
    if isinstance(cuts, int):
        pieces = [text[i : i + cuts] for i in range(0, len(text), cuts)]
    else:
        bounds = [0, *sorted(set(cuts)), len(text)]
        pieces = [text[a:b] for a, b in itertools.pairwise(bounds)]
    c = SentenceChunker(**kw)  # type: ignore[arg-type]
    out: list[str] = []
    for p in pieces:
        out += c.push(p)
    out += c.flush()
    return out, c.take_end_call()


def squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def test_sentences_are_emitted_as_soon_as_complete() -> None:
    c = SentenceChunker()
    assert c.push("Sure, I can help") == []
    assert c.push(" with that.") == []  # the "." may still be "that.com": wait for a space
    assert c.push(" What") == ["Sure, I can help with that."]
    assert c.push(" day works for you? Tuesday") == ["What day works for you?"]
    assert c.flush() == ["Tuesday"]


def test_abbreviations_decimals_times_and_initials_do_not_split() -> None:
    text = (
        "Dr. Smith and Mr. J. Doe will call at 2:30 p.m. tomorrow. "
        "It costs 3.5 dollars, e.g. for parking, vs. ten before. Done now."
    )
    chunks, _ = run(text, 4)
    assert chunks == [
        "Dr. Smith and Mr. J. Doe will call at 2:30 p.m. tomorrow.",
        "It costs 3.5 dollars, e.g. for parking, vs. ten before.",
        "Done now.",
    ]


def test_numbered_lists_split_per_item_not_after_the_number() -> None:
    chunks, _ = run("Here are your options:\n1. First option\n2. Second option.", 5)
    assert chunks == ["Here are your options:", "1. First option", "2. Second option."]


def test_ellipsis_and_quotes() -> None:
    text = 'Well... let me check that for you. He said "Stop." Then he left!'
    chunks, _ = run(text, 3, min_sentence_chars=1)
    assert chunks == ["Well... let me check that for you.", 'He said "Stop."', "Then he left!"]


def test_first_chunk_early_at_a_clause_later_only_long_clauses() -> None:
    text = "Absolutely, happy to help, we can do that, and then we will see what is next, okay."
    early, _ = run(text, 7)
    assert early[0] == "Absolutely, happy to help,"
    late, _ = run(text, 7, first_chunk_early=False)
    assert late[0] != "Absolutely, happy to help,"
    assert squash("".join(early)) == squash("".join(late)) == squash(text)


def test_short_later_sentences_are_merged() -> None:
    chunks, _ = run("Hi. Yes. No. Maybe later today then.", 2)
    assert chunks[0] == "Hi."
    assert chunks[1] == "Yes. No. Maybe later today then."


def test_long_run_without_punctuation_is_cut_at_a_space() -> None:
    words = " ".join(["word"] * 100)
    chunks, _ = run(words, 11, max_chunk_chars=50)
    assert all(len(c) <= 50 for c in chunks)
    assert " ".join(chunks).split() == words.split()


def test_end_call_tag_split_across_deltas() -> None:
    c = SentenceChunker()
    out: list[str] = []
    for piece in ["Goodbye, have a ", "great day! [END", "_CA", "LL]"]:
        out += c.push(piece)
        assert all("[" not in o for o in out)
    out += c.flush()
    assert out == ["Goodbye, have a great day!"]
    assert c.take_end_call() is True
    assert c.take_end_call() is False


def test_text_that_only_looks_like_the_tag_is_spoken() -> None:
    chunks, end = run("Press [END] to finish [END_CAL", 2)
    assert chunks == ["Press [END] to finish [END_CAL"]
    assert end is False


def test_reset_forgets_the_reply() -> None:
    c = SentenceChunker()
    c.push("Half a sentence [END_")
    c.reset()
    assert c.pending == "" and not c.end_call
    assert c.push("New one. ") == ["New one."]


_alphabet = st.sampled_from(
    [*list("abcXY .,!?;:\n'\"…0123-"), "Dr.", "e.g.", "3.5", "2:30", "1. ", "[END_CALL]", "["]
)


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(_alphabet, max_size=60), data=st.data())
def test_chunks_concatenate_to_the_input_minus_the_tag(
    parts: list[str], data: st.DataObject
) -> None:
    text = "".join(parts)
    cuts = data.draw(st.lists(st.integers(0, max(len(text), 0)), max_size=12))
    chunks, end_call = run(text, cuts, max_chunk_chars=40)
    expected, found = strip_end_call(text)
    assert squash("".join(chunks)) == squash(expected)
    assert end_call == found
    for chunk in chunks:
        assert chunk == chunk.strip() and chunk
        assert END_CALL_TAG.lower() not in chunk.lower()


@settings(max_examples=200, deadline=None)
@given(
    before=st.text(alphabet="ab .,!?", max_size=30),
    after=st.text(alphabet="ab .,!?", max_size=30),
    data=st.data(),
)
def test_tag_never_leaks_for_any_split(before: str, after: str, data: st.DataObject) -> None:
    tag = data.draw(st.sampled_from([END_CALL_TAG, "[end_call]", "[End_Call]"]))
    text = before + tag + after
    cuts = data.draw(st.lists(st.integers(0, len(text)), max_size=len(text)))
    chunks, end_call = run(text, cuts)
    assert end_call
    joined = " ".join(chunks)
    assert "[" not in joined and "]" not in joined
    assert squash(joined) == squash(before + after)
