"""The system prompt of a call: agent prompt + call purpose + dynamic variables + history.

Pure (no frames, no I/O): :func:`build_system_prompt` runs once at call start and its result
goes to :class:`~nixflex_engine.processors.context.UserContextAggregator`, which sends it
with every LLM request (the LLM processor marks it for prompt caching, so it must stay the
same for the whole call).

Placeholders
------------
A placeholder is a name in *single* braces, ``{patient_name}``: the name is identifier-like
(``[A-Za-z_][A-Za-z0-9_]*``), the opening brace is not preceded by another ``{`` and the
closing brace not followed by another ``}``. Everything else is left exactly as written:

* a placeholder whose name has no value in ``dynamic_vars`` (or whose value is ``None``),
  so Claude sees the literal ``{patient_name}``, as the public API documents;
* JSON and other braces: ``{"a": 1}``, ``{ name }``, ``{{name}}``, ``{{``, ``}}``, and a name
  touching another brace (``{"t": {time}}`` keeps ``{time}}``: write ``{"t": {time} }``).

Values are inserted literally, in one pass: a value that itself contains ``{other}`` is not
interpolated again. Non-string values are rendered with ``str``. The call purpose is
interpolated like the agent prompt (each on its own, so a placeholder can never be formed
across the two); history summaries are data, never interpolated.

Layout
------
The agent prompt comes first (unchanged when it has no placeholder and nothing else is
added), then a ``# This call`` section with the call purpose, then a history section listing
the past calls given, newest first, each with its date and outcome.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = [
    "PLACEHOLDER_RE",
    "HistoryEntry",
    "build_system_prompt",
    "format_history",
    "interpolate",
]

#: A ``{name}`` placeholder in single braces (see the module docstring).
PLACEHOLDER_RE = re.compile(r"(?<!\{)\{([A-Za-z_][A-Za-z0-9_]*)\}(?!\})")

CALL_SECTION_TITLE = "# This call"
HISTORY_SECTION_TITLE = "# Previous calls with this person (newest first)"


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """A past call to the same number: when it took place, its summary, and how it went.

    ``date`` is a date or a datetime (naive datetimes are taken as UTC); ``outcome`` is a short
    free text such as ``"successful"``, ``"voicemail"`` or ``"caller asked to call back"``.
    """

    date: dt.date
    summary: str
    outcome: str | None = None


def interpolate(text: str, dynamic_vars: Mapping[str, object] | None) -> str:
    """Replace each ``{name}`` placeholder of ``text`` that has a value in ``dynamic_vars``."""
    if not dynamic_vars or "{" not in text:
        return text

    def replace(match: re.Match[str]) -> str:
        value = dynamic_vars.get(match.group(1))
        if value is None:
            return match.group(0)
        return value if isinstance(value, str) else str(value)

    return PLACEHOLDER_RE.sub(replace, text)


def _sort_key(entry: HistoryEntry) -> dt.datetime:
    when = entry.date
    if isinstance(when, dt.datetime):
        if when.tzinfo is not None:
            when = when.astimezone(dt.UTC).replace(tzinfo=None)
        return when
    return dt.datetime.combine(when, dt.time.min)


def _format_date(when: dt.date) -> str:
    if isinstance(when, dt.datetime):
        if when.tzinfo is not None:
            when = when.astimezone(dt.UTC)
        return when.strftime("%Y-%m-%d %H:%M UTC")
    return when.isoformat()


def _one_line(text: str) -> str:
    return " ".join(text.split())


def format_history(history: Iterable[HistoryEntry]) -> str:
    """The history section for ``history`` (any order; listed newest first), or ``""``."""
    entries = sorted(history, key=_sort_key, reverse=True)
    if not entries:
        return ""
    lines = [HISTORY_SECTION_TITLE]
    for entry in entries:
        line = f"- {_format_date(entry.date)}"
        outcome = _one_line(entry.outcome or "")
        if outcome:
            line += f" (outcome: {outcome})"
        summary = _one_line(entry.summary)
        lines.append(f"{line}: {summary}" if summary else line)
    return "\n".join(lines)


def build_system_prompt(
    agent_prompt: str,
    *,
    call_prompt: str | None = None,
    dynamic_vars: Mapping[str, object] | None = None,
    history: Iterable[HistoryEntry] = (),
) -> str:
    """The call's system prompt: agent prompt, call purpose, placeholders filled, history.

    With no call purpose and no history, the result is the agent prompt with its
    placeholders filled, and nothing else changed.
    """
    sections = [interpolate(agent_prompt, dynamic_vars)]
    if call_prompt and call_prompt.strip():
        sections.append(f"{CALL_SECTION_TITLE}\n{interpolate(call_prompt.strip(), dynamic_vars)}")
    history_block = format_history(history)
    if history_block:
        sections.append(history_block)
    if len(sections) == 1:
        return sections[0]
    return "\n\n".join(s.rstrip() for s in sections if s.strip())
