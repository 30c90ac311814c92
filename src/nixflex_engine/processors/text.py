"""Streaming LLM text → speakable chunks, and the ``[END_CALL]`` tag (pure; no frames, no I/O).

Consumes: text deltas as the LLM streams them (:meth:`SentenceChunker.push`), then the end of
the reply (:meth:`SentenceChunker.flush`). Emits: chunks of text, each a sentence or a long
enough clause, as soon as it is complete, so the TTS can start speaking long before the reply
is over. The TTS processor (``processors/tts.py``) owns one chunker and turns its chunks into
``TTSTextFrame`` / audio; this module knows nothing about frames.

Where a chunk ends
------------------
A boundary is a punctuation mark *followed by whitespace* (closing quotes and brackets stay
with the chunk), so "3.5", "2:30", "1,000", "e.g.", "U.S." and URLs never split, and the
chunker waits for the character after a "." before deciding. Then:

* ``.``, ``!``, ``?`` end a sentence, except after a title or abbreviation ("Dr.", "Mr.",
  "e.g.", "vs."), a single initial ("J. Smith"), a list number at the start of a line or after
  a colon ("1. First"), or before a lowercase word ("a.m. tomorrow", "etc. and"). An ellipsis
  ("..." or "…") ends a sentence only before a capital letter.
* A newline ends a chunk (list items, paragraphs).
* ``,`` ``;`` ``:`` ``—`` end a *clause*: a chunk ends there only when it is at least
  ``min_clause_chars`` long (shorter clauses would sound choppy).
* The **first** chunk of a reply is sent early (``first_chunk_early``): any sentence end, or a
  clause end once ``first_chunk_min_chars`` long. This cuts the time to the first audio.
* Later sentences shorter than ``min_sentence_chars`` are merged with the next one, so short
  replies do not cost one TTS request each.
* A run of ``max_chunk_chars`` with no boundary is cut at its last space.

The end-call tag
----------------
``[END_CALL]`` (any case) is removed wherever it appears, also when it arrives split across
deltas ("[END", "_CA", "LL]"): the chunker holds back any tail that could still become the
tag, so the tag never reaches the TTS. :attr:`SentenceChunker.end_call` then tells that the
reply asked to end the call; the text around the tag is spoken.
"""

from __future__ import annotations

import re

__all__ = ["END_CALL_TAG", "SentenceChunker", "strip_end_call"]

END_CALL_TAG = "[END_CALL]"
_TAG_LOWER = END_CALL_TAG.lower()
_TAG_RE = re.compile(re.escape(END_CALL_TAG), re.IGNORECASE)

_SENTENCE_PUNCT = ".!?…"
_DASHES = "\u2014\u2013"  # em dash, en dash
_CLAUSE_PUNCT = ",;:" + _DASHES
_CLOSERS = "\"'\u201d\u2019\u00bb)]}"  # closing quotes and brackets
_OPENERS = "\"'\u201c\u2018(\u00ab["
_CANDIDATE_RE = re.compile("[.!?\u2026]+|[,;:" + _DASHES + "]|\n")

# Never end a sentence: titles and Latin abbreviations that precede more words.
_NEVER_END = frozenset(
    "dr mr mrs ms mx prof sr jr st mt ft rev gen col capt lt sgt hon vs e.g i.e cf approx "
    "no nos fig dept est tel ext ave blvd rd apt ste vol".split()
)
# May end a sentence: only when the next word is capitalised.
_MAYBE_END = frozenset(
    "etc a.m p.m inc ltd co corp jan feb mar apr jun jul aug sep sept oct nov dec mon tue "
    "wed thu fri sat sun u.s u.k".split()
)


def strip_end_call(text: str) -> tuple[str, bool]:
    """``text`` without any ``[END_CALL]`` tag (removed until none is left), and whether one was
    found."""
    found = False
    while True:
        text, n = _TAG_RE.subn("", text)
        if not n:
            return text, found
        found = True


def _tag_prefix_len(text: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of the tag."""
    low = text[-(len(END_CALL_TAG) - 1) :].lower()
    for n in range(min(len(low), len(END_CALL_TAG) - 1), 0, -1):
        if _TAG_LOWER.startswith(low[-n:]):
            return n
    return 0


class SentenceChunker:
    """Cuts a streaming reply into speakable chunks and removes the ``[END_CALL]`` tag.

    One instance serves one reply at a time: :meth:`push` the deltas, :meth:`flush` at the end
    (which readies the chunker for the next reply), :meth:`reset` to drop everything (barge-in).
    """

    __slots__ = (
        "_buf",
        "_end_call",
        "_first",
        "_hold",
        "_scan",
        "first_chunk_early",
        "first_chunk_min_chars",
        "max_chunk_chars",
        "min_clause_chars",
        "min_sentence_chars",
    )

    def __init__(
        self,
        *,
        first_chunk_early: bool = True,
        first_chunk_min_chars: int = 12,
        min_clause_chars: int = 60,
        min_sentence_chars: int = 20,
        max_chunk_chars: int = 300,
    ) -> None:
        if max_chunk_chars < 2:
            raise ValueError("max_chunk_chars must be at least 2")
        self.first_chunk_early = first_chunk_early
        self.first_chunk_min_chars = first_chunk_min_chars
        self.min_clause_chars = min_clause_chars
        self.min_sentence_chars = min_sentence_chars
        self.max_chunk_chars = max_chunk_chars
        self._buf = ""  # tag-free text not yet emitted
        self._hold = ""  # a tail that may still become the tag
        self._scan = 0  # where in _buf to look for the next boundary
        self._first = True
        self._end_call = False

    @property
    def end_call(self) -> bool:
        """Whether the current reply contained ``[END_CALL]`` (until :meth:`flush`/:meth:`reset`
        of the next reply: read it before calling :meth:`take_end_call` or :meth:`reset`)."""
        return self._end_call

    def take_end_call(self) -> bool:
        """Return :attr:`end_call` and clear it."""
        found, self._end_call = self._end_call, False
        return found

    @property
    def pending(self) -> str:
        """Text received but not yet emitted (the held-back tag prefix included)."""
        return self._buf + self._hold

    def reset(self) -> None:
        """Forget the current reply entirely (barge-in): nothing pending, no end-call."""
        self._buf = self._hold = ""
        self._scan = 0
        self._first = True
        self._end_call = False

    def push(self, delta: str) -> list[str]:
        """Add a delta; returns the chunks it completed (possibly none)."""
        if not delta:
            return []
        text, found = strip_end_call(self._hold + delta)
        self._end_call |= found
        keep = _tag_prefix_len(text)
        if keep:
            self._hold = text[-keep:]
            text = text[:-keep]
        else:
            self._hold = ""
        self._buf += text
        return self._drain()

    def flush(self) -> list[str]:
        """End of the reply: the chunks still pending (the held-back tail is plain text, since
        the tag never completed). The next :meth:`push` starts a new reply (first chunk early
        again); :attr:`end_call` stays set until read with :meth:`take_end_call`."""
        self._buf += self._hold
        self._hold = ""
        out = self._drain()
        rest = self._buf.strip()
        if rest:
            out.append(rest)
        self._buf = ""
        self._scan = 0
        self._first = True
        return out

    # -- internals

    def _drain(self) -> list[str]:
        out: list[str] = []
        while True:
            end = self._boundary()
            if end is None:
                break
            chunk = self._buf[:end].strip()
            self._buf = self._buf[end:]
            self._scan = 0
            if chunk:
                out.append(chunk)
                self._first = False
        return out

    def _boundary(self) -> int | None:
        """End index (exclusive) of the next complete chunk in ``_buf``, or None."""
        buf = self._buf
        lead = len(buf) - len(buf.lstrip())
        for m in _CANDIDATE_RE.finditer(buf, self._scan):
            i, j = m.start(), m.end()
            mark = m.group()
            size = i - lead  # characters of the chunk before this mark
            if mark == "\n":
                if buf[lead:i].strip():
                    return j
                continue
            k = j
            while k < len(buf) and buf[k] in _CLOSERS:
                k += 1
            if k >= len(buf):
                self._scan = i  # cannot decide before the next character arrives
                return self._forced_cut()
            if not buf[k].isspace() and mark not in _DASHES:
                continue
            if mark[0] in _SENTENCE_PUNCT:
                verdict = self._sentence_end(buf, i, mark, k)
                if verdict is None:
                    self._scan = i
                    return self._forced_cut()
                if not verdict:
                    continue
                if self._first or size + len(mark) >= self.min_sentence_chars:
                    return k
            else:
                need = (
                    self.first_chunk_min_chars
                    if self._first and self.first_chunk_early
                    else self.min_clause_chars
                )
                if size >= need:
                    return k
        self._scan = max(self._scan, len(buf) - 1, 0)
        return self._forced_cut()

    def _forced_cut(self) -> int | None:
        buf = self._buf
        lead = len(buf) - len(buf.lstrip())
        if len(buf) - lead < self.max_chunk_chars:
            return None
        limit = lead + self.max_chunk_chars
        cut = buf.rfind(" ", lead + 1, limit)
        return cut if cut > lead else limit

    @staticmethod
    def _sentence_end(buf: str, i: int, mark: str, k: int) -> bool | None:
        """Whether the mark at ``buf[i]`` (followed by whitespace at ``k``) ends a sentence;
        None if that depends on a next word not received yet."""
        if "\u2026" in mark or (len(mark) > 1 and set(mark) == {"."}):
            nxt = _next_word_start(buf, k)
            return None if nxt is None else nxt.isupper()
        if mark != ".":
            return True  # "!", "?", "?!", "!!"...
        start = i
        while start > 0 and not buf[start - 1].isspace():
            start -= 1
        word = buf[start:i].lstrip(_OPENERS).lower()
        if not word:
            return True
        if word in _NEVER_END:
            return False
        if len(word) == 1 and word.isalpha() and buf[i - 1].isupper():
            return False  # an initial: "J. Smith"
        if word.isdigit() and len(word) <= 3:
            before = buf[:start].rstrip(" \t")
            if not before.strip() or before.endswith(("\n", ":")):
                return False  # a list number: "1. First"
        if word in _MAYBE_END or "." in word:
            nxt = _next_word_start(buf, k)
            return None if nxt is None else nxt.isupper()
        nxt = _next_word_start(buf, k)
        if nxt is not None and nxt.islower():
            return False  # "a.m. tomorrow", "approx. ten"
        return True


def _next_word_start(buf: str, k: int) -> str | None:
    """The first non-space character at or after ``k``, or None if none has arrived."""
    for ch in buf[k:]:
        if not ch.isspace():
            return ch
    return None
