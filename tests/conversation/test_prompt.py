"""Prompt building: placeholders, braces left alone, call purpose and history (property-based)."""

from __future__ import annotations

import datetime as dt
import re

from hypothesis import assume, given
from hypothesis import strategies as st

from nixflex_engine.processors.prompt import (
    HISTORY_SECTION_TITLE,
    PLACEHOLDER_RE,
    HistoryEntry,
    build_system_prompt,
    interpolate,
)

names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,11}", fullmatch=True)
values = st.text(max_size=20)
brace_free_values = st.text(alphabet=st.characters(blacklist_characters="{}"), max_size=20)
# Text made of pieces that are likely to contain tricky braces.
pieces = st.one_of(
    st.text(max_size=10),
    names.map(lambda n: "{" + n + "}"),
    names.map(lambda n: "{{" + n + "}}"),
    names.map(lambda n: "{ " + n + " }"),
    st.sampled_from(['{"a": 1}', "{{", "}}", "{", "}", "{a{b}c}", '{"x": {"y": 2}}', "{}"]),
)
templates = st.lists(pieces, max_size=12).map("".join)


def test_seed_example() -> None:
    prompt = "You are calling {patient_name} about their appointment on {appointment_time}."
    out = build_system_prompt(
        prompt, dynamic_vars={"patient_name": "Sarah", "appointment_time": "Tuesday at 2pm"}
    )
    assert out == "You are calling Sarah about their appointment on Tuesday at 2pm."


def test_missing_variable_is_left_as_written() -> None:
    out = build_system_prompt("Hi {patient_name}, {unknown}!", dynamic_vars={"patient_name": "S"})
    assert out == "Hi S, {unknown}!"


def test_other_braces_untouched() -> None:
    prompt = 'Reply as JSON {"name": "x", "n": {"k": 1}} or {{name}} or { name } or {na me}.'
    assert build_system_prompt(prompt, dynamic_vars={"name": "Bob", "k": "K"}) == prompt


def test_values_are_not_reinterpolated() -> None:
    out = interpolate("{a} and {b}", {"a": "{b}", "b": "B\\1 {a}"})
    assert out == "{b} and B\\1 {a}"


def test_none_value_means_no_value_and_non_strings_are_rendered() -> None:
    assert interpolate("{a}/{b}", {"a": None, "b": 3}) == "{a}/3"


def test_call_prompt_is_interpolated_and_history_is_not() -> None:
    history = [
        HistoryEntry(dt.date(2026, 11, 2), "Asked about {name}.", "voicemail"),
        HistoryEntry(dt.datetime(2026, 11, 20, 9, 30, tzinfo=dt.UTC), "Booked.", "successful"),
        HistoryEntry(dt.date(2026, 11, 10), "Call back  later.\nBusy."),
    ]
    out = build_system_prompt(
        "Agent for {company}.",
        call_prompt="  Confirm {name}'s booking. ",
        dynamic_vars={"company": "Acme", "name": "Sarah"},
        history=history,
    )
    assert out == (
        "Agent for Acme.\n\n"
        "# This call\nConfirm Sarah's booking.\n\n"
        f"{HISTORY_SECTION_TITLE}\n"
        "- 2026-11-20 09:30 UTC (outcome: successful): Booked.\n"
        "- 2026-11-10: Call back later. Busy.\n"
        "- 2026-11-02 (outcome: voicemail): Asked about {name}."
    )


def test_history_mixes_aware_naive_and_dates() -> None:
    cet = dt.timezone(dt.timedelta(hours=1))
    history = [
        HistoryEntry(dt.datetime(2026, 1, 1, 0, 30, tzinfo=cet), "b"),  # 2025-12-31 23:30 UTC
        HistoryEntry(dt.date(2026, 1, 1), "c"),
        HistoryEntry(dt.datetime(2025, 12, 31, 12, 0), "a"),
    ]
    out = build_system_prompt("P", history=history)
    assert [line[-1] for line in out.splitlines()[3:]] == ["c", "b", "a"]


def test_empty_call_prompt_and_history_add_nothing() -> None:
    assert build_system_prompt("Prompt\n", call_prompt="  ", history=[]) == "Prompt\n"


@given(
    st.text(alphabet=st.characters(blacklist_characters="{"), max_size=60),
    st.dictionaries(names, values),
)
def test_prompt_without_braces_is_unchanged(prompt: str, dyn: dict[str, str]) -> None:
    assert build_system_prompt(prompt, dynamic_vars=dyn) == prompt


@given(templates)
def test_no_vars_means_unchanged(template: str) -> None:
    assert build_system_prompt(template) == template
    assert build_system_prompt(template, dynamic_vars={}) == template


@given(templates, st.dictionaries(names, brace_free_values, max_size=6))
def test_known_placeholders_replaced_unknown_preserved(template: str, dyn: dict[str, str]) -> None:
    out = interpolate(template, dyn)
    # Rebuild the expected text independently: walk the template, replacing exactly the
    # single-brace identifiers whose name is known.
    expected: list[str] = []
    i = 0
    while i < len(template):
        m = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}").match(template, i)
        single = (
            m is not None
            and (i == 0 or template[i - 1] != "{")
            and (m.end() == len(template) or template[m.end()] != "}")
        )
        if m is not None and single and m.group(1) in dyn:
            expected.append(dyn[m.group(1)])
            i = m.end()
        else:
            expected.append(template[i])
            i += 1
    assert out == "".join(expected)
    # No known placeholder survives (values have no braces, so none can be re-formed).
    assert not [n for n in PLACEHOLDER_RE.findall(out) if n in dyn]


@given(templates, st.dictionaries(names, brace_free_values, max_size=6))
def test_interpolation_is_idempotent_for_brace_free_values(
    template: str, dyn: dict[str, str]
) -> None:
    once = interpolate(template, dyn)
    assert interpolate(once, dyn) == once


@given(templates, st.dictionaries(names, values, max_size=6), names)
def test_unknown_names_survive_byte_for_byte(
    template: str, dyn: dict[str, str], unknown: str
) -> None:
    assume(unknown not in dyn)
    marked = f"<{{{unknown}}}>"
    out = interpolate(template + marked, dyn)
    assert out.endswith(marked)


@given(templates, st.dictionaries(names, values, max_size=6))
def test_double_braces_never_change(template: str, dyn: dict[str, str]) -> None:
    # Every "{{" / "}}" run of the template is still there, in order, after interpolation
    # when values add none.
    assume(not any("{" in v or "}" in v for v in dyn.values()))
    out = interpolate(template, dyn)
    assert re.findall(r"\{\{+|\}\}+", out) == re.findall(r"\{\{+|\}\}+", template)


@given(
    st.lists(
        st.builds(
            HistoryEntry,
            st.dates(min_value=dt.date(2000, 1, 1), max_value=dt.date(2100, 1, 1)),
            st.text(max_size=20),
            st.none() | st.text(max_size=10),
        ),
        max_size=6,
    )
)
def test_history_is_newest_first_and_complete(history: list[HistoryEntry]) -> None:
    out = build_system_prompt("P", history=history)
    if not history:
        assert out == "P"
        return
    lines = out.split("\n\n", 1)[1].splitlines()
    assert lines[0] == HISTORY_SECTION_TITLE
    dates = [line[2:12] for line in lines[1:]]
    assert len(dates) == len(history)
    assert dates == sorted(dates, reverse=True)
    assert sorted(dates) == sorted(h.date.isoformat() for h in history)
