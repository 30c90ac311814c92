"""The fake Anthropic's forced-tool answers for post-call analysis: deterministic, derived from
the caller's lines, and null (never invented) for a nullable field the call did not give."""

from __future__ import annotations

from typing import Any

from nixflex_engine.sandbox.fake_anthropic import tool_input_for

_SCALAR_OR_NULL = ["string", "number", "boolean", "null"]


def _tool(extracted: dict[str, Any] | None = None) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "call_summary": {"type": "string"},
        "call_successful": {"type": "boolean"},
        "caller_sentiment": {"type": "string", "enum": ["happy", "neutral", "frustrated"]},
    }
    if extracted is not None:
        properties["extracted_data"] = {
            "type": "object",
            "properties": extracted,
            "required": list(extracted),
            "additionalProperties": False,
        }
    return {
        "name": "record_call_analysis",
        "input_schema": {"type": "object", "properties": properties, "required": list(properties)},
    }


def _body(*lines: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": "\n".join(lines)}]}


def test_happy_and_frustrated_spellings_of_the_sentiment_enum() -> None:
    happy = tool_input_for(_tool(), _body("[0:01] Agent: Hi.", "[0:03] Caller: Sure, great!"))
    assert happy["caller_sentiment"] == "happy" and happy["call_successful"] is True
    cross = tool_input_for(
        _tool(), _body("[0:01] Agent: Hi.", "[0:04] Caller: Stop calling me, this is terrible.")
    )
    assert cross["caller_sentiment"] == "frustrated" and cross["call_successful"] is False
    flat = tool_input_for(_tool(), _body("[0:01] Agent: Hi.", "[0:04] Caller: Who is this"))
    assert flat["caller_sentiment"] == "neutral"


def test_only_the_callers_lines_decide_mood_and_success() -> None:
    # The agent is cheerful and says goodbye; the caller is annoyed and refuses.
    body = _body(
        "[0:01] Agent: Great to reach you, thanks for picking up!",
        "[0:05] Caller: I'm not interested, stop calling.",
        "[0:07] Agent: Understood, goodbye!",
    )
    data = tool_input_for(_tool(), body)
    assert data["caller_sentiment"] == "frustrated" and data["call_successful"] is False
    # And the other way round: the agent's "Goodbye!" does not make an agreeing caller fail.
    body = _body(
        "[0:01] Agent: Can we book you for Tuesday?",
        "[0:04] Caller: Yes, okay.",
        "[0:06] Agent: Goodbye!",
    )
    assert tool_input_for(_tool(), body)["call_successful"] is True


def test_unlabelled_transcripts_use_every_line() -> None:
    data = tool_input_for(_tool(), _body("Thanks, that is perfect."))
    assert data["caller_sentiment"] == "happy"


def test_nullable_fields_are_null_when_the_call_does_not_say_them() -> None:
    extracted = {
        "customer_name": {"type": _SCALAR_OR_NULL, "description": "Full name"},
        "email": {"type": _SCALAR_OR_NULL},
        "party_size": {"type": _SCALAR_OR_NULL},
        "budget": {"type": ["number", "null"]},
        "callback_date": {"type": ["string", "null"], "format": "date"},
        "company": {"anyOf": [{"type": "string"}, {"type": "null"}]},
    }
    said = tool_input_for(
        _tool(extracted),
        _body(
            "[0:01] Agent: Hello.",
            "[0:03] Caller: My customer name is Dana Reyes, the party size is 4, "
            "mail me at dana@example.com.",
        ),
    )
    assert said["extracted_data"] == {
        "customer_name": "Dana Reyes",
        "email": "dana@example.com",
        "party_size": 4,  # number allowed: "4" is given as a number
        "budget": None,  # numbers are heard ("[0:01]", "4"), none of them the budget
        "callback_date": None,
        "company": None,
    }
    silent = tool_input_for(_tool(extracted), _body("Agent: Hello?", "Caller: Who is this"))
    assert silent["extracted_data"] == dict.fromkeys(extracted)


def test_fields_that_are_not_nullable_still_get_a_value() -> None:
    extracted = {"customer_name": {"type": "string"}, "email": {"type": "string"}}
    data = tool_input_for(_tool(extracted), _body("Caller: hello"))
    assert data["extracted_data"] == {
        "customer_name": "unknown",
        "email": "unknown@example.com",
    }


def test_same_conversation_same_answer() -> None:
    body = _body("[0:01] Agent: Hi.", "[0:02] Caller: My name is Zoë Ångström, thanks!")
    tool = _tool({"name": {"type": _SCALAR_OR_NULL}})
    first = tool_input_for(tool, body)
    assert first == tool_input_for(tool, body)
    assert first["extracted_data"] == {"name": "Zoë Ångström"}
    assert first["caller_sentiment"] == "happy"


def test_summary_counts_and_quotes_speaker_lines_not_the_prompts_wrapping() -> None:
    body = _body(
        "The transcript of the call (3 lines):",
        "<transcript>",
        "[0:01] Agent: Hi, this is Alex.",
        "[0:03] Caller: Hello.",
        "[0:06] Agent (interrupted): Do you",
        "</transcript>",
    )
    summary = tool_input_for(_tool(), body)["call_summary"]
    assert (
        summary
        == 'A call of 3 transcript lines. It ended with: "[0:06] Agent (interrupted): Do you".'
    )
    # Without speaker labels, every line counts, as before.
    plain = tool_input_for(_tool(), _body("hello there", "who is this"))["call_summary"]
    assert plain == 'A call of 2 transcript lines. It ended with: "who is this".'
