"""Every example in ``examples/`` runs against the sandbox here, as a newcomer would run it.

(a) ``keyword_spotter`` — a custom processor: the frame it emits and the reply it changes;
(b) ``custom_llm`` — a provider swapped behind ``LLMService``; (c) ``sandbox_call`` — a
hand-composed chain against the sandbox callee, no HTTP API; (d) ``tool_call`` — Claude tool
use mid-call; (e) ``engine_keyword_spotter`` — the spotter as an agent's ``chain_factory`` on
the engine, through the HTTP API and the sandbox carrier; and a broken factory failing its
calls cleanly on the engine.
"""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path
from typing import Any

import pytest

from nixflex_engine.frames import (
    LLMContextFrame,
    LLMToolCallFrame,
    LLMToolResultFrame,
    TranscriptFrame,
)
from nixflex_engine.pipeline import FrameProcessor, Pipeline, PipelineTask

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _examples_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT))  # as `python -m examples.x` from the root


def roles_and_texts(outcome: Any) -> list[tuple[str, str]]:
    return [(line.role, line.text) for line in outcome.transcript]


# --- (a) the keyword spotter, alone --------------------------------------------------------


def test_spot_finds_whole_words_in_any_case() -> None:
    from examples.keyword_spotter import spot

    notes = {"cancel": "n1", "refund": "n2"}
    assert spot("Please CANCEL it, and a refund.", notes) == ["cancel", "refund"]
    assert spot("It was cancelled already", notes) == []  # a whole word only
    assert spot("", notes) == []


class _Sink(FrameProcessor):
    def __init__(self) -> None:
        super().__init__(name="sink")
        self.frames: list[Any] = []

    async def process_frame(self, frame: Any, direction: Any) -> None:
        self.frames.append(frame)
        await self.push_frame(frame, direction)


async def test_the_spotter_emits_a_frame_and_notes_only_that_request() -> None:
    from examples.keyword_spotter import CANCEL_NOTE, KeywordSpottedFrame, KeywordSpotter

    spotter, sink = KeywordSpotter({"cancel": CANCEL_NOTE}), _Sink()
    task = PipelineTask(Pipeline([spotter, sink]), call_id="CA-spot")
    first = (
        {"role": "user", "content": "[The call connected.]"},
        {"role": "assistant", "content": "Hi"},
    )
    hit = LLMContextFrame(messages=(*first, {"role": "user", "content": "Cancel it."}), turn=1)
    miss = LLMContextFrame(messages=(*first, {"role": "user", "content": "Thanks."}), turn=2)
    runner = asyncio.ensure_future(task.run())
    await asyncio.sleep(0)
    await task.queue_frame(hit)
    await task.queue_frame(TranscriptFrame(text="cancel"))  # other frames pass untouched
    await task.queue_frame(miss)
    await asyncio.sleep(0.01)
    await task.cancel("done")
    await runner
    contexts = [f for f in sink.frames if isinstance(f, LLMContextFrame)]
    spotted = [f for f in sink.frames if isinstance(f, KeywordSpottedFrame)]
    assert spotted == [KeywordSpottedFrame(keyword="cancel", text="Cancel it.", turn=1)]
    assert contexts[0].messages[-1]["content"] == f"Cancel it.\n{CANCEL_NOTE}"
    assert contexts[0].messages[:-1] == first and contexts[0].turn == 1
    assert contexts[1] is miss
    assert any(isinstance(f, TranscriptFrame) for f in sink.frames)
    assert hit.messages[-1]["content"] == "Cancel it."  # the original frame is unchanged


# --- (a)-(d) against the sandbox callee -------------------------------------------------------


@pytest.mark.slow
async def test_a_keyword_spotter_changes_the_next_reply() -> None:
    from examples.keyword_spotter import CANCEL_NOTE, KeywordSpottedFrame, run_example

    call = await run_example()
    assert call.outcome.ended_reason == "agent_hangup", call.outcome.errors
    assert call.outcome.errors == []
    assert roles_and_texts(call.outcome) == [
        ("caller", "Hello?"),
        ("agent", "Hi Sarah, it's Anna."),
        ("caller", "Please cancel it."),
        ("agent", "Done, it is cancelled. Bye!"),  # the reply the note asked for
    ]
    [spotted] = [f for f in call.frames if isinstance(f, KeywordSpottedFrame)]
    assert (spotted.keyword, spotted.text) == ("cancel", "Please cancel it.")
    [request] = call.anthropic.requests
    assert request.last_user_text.endswith(CANCEL_NOTE)
    assert call.heard.protocol_violations == []


@pytest.mark.slow
async def test_b_a_swapped_llm_provider() -> None:
    from examples.custom_llm import RulesLLM, run_example

    assert RulesLLM().reply_for("what are your HOURS") == (
        "We are open nine to five. Goodbye! [END_CALL]"
    )
    assert RulesLLM().reply_for("hmm") == "Sorry, could you say that again?"
    call = await run_example()
    assert call.outcome.ended_reason == "agent_hangup", call.outcome.errors
    assert roles_and_texts(call.outcome) == [
        ("caller", "Hi?"),
        ("agent", "Riverside Clinic, hello."),
        ("caller", "When are you open?"),
        ("agent", "We are open nine to five. Goodbye!"),
    ]
    assert call.anthropic.requests == []  # no Claude at all
    [turn] = call.outcome.latency["turns"]
    assert turn["llm_ttft_ms"] is not None and turn["total_ms"] > 0


@pytest.mark.slow
async def test_c_a_hand_built_chain_with_no_http_api() -> None:
    from examples.sandbox_call import run_example

    call = await run_example()
    assert call.outcome.ended_reason == "agent_hangup", call.outcome.errors
    assert roles_and_texts(call.outcome) == [
        ("agent", "Hi Sarah, this is Anna from Riverside Clinic."),
        ("caller", "Hi Anna. Goodbye!"),
        ("agent", "Goodbye, Sarah!"),
    ]
    assert "Hi Sarah, this is Anna" in call.heard.heard_text()
    assert call.outcome.latency["turns"][0]["total_ms"] > 0
    [request] = call.anthropic.requests
    assert "calling Sarah" in str(request.body["system"])


@pytest.mark.slow
async def test_d_a_tool_call_mid_call() -> None:
    from examples.tool_call import run_example

    call = await run_example()
    assert call.outcome.ended_reason == "agent_hangup", call.outcome.errors
    assert roles_and_texts(call.outcome)[2:] == [
        ("caller", "Is Friday free?"),
        ("agent", "Friday has ten or half past two. Call back to book. Bye!"),
    ]
    [tool_call] = [f for f in call.frames if isinstance(f, LLMToolCallFrame)]
    [result] = [f for f in call.frames if isinstance(f, LLMToolResultFrame)]
    assert (tool_call.name, tool_call.input) == ("check_slots", {"day": "Friday"})
    assert result.result == '{"day": "friday", "free": ["10:00", "14:30"]}'
    ask, after_tool = call.anthropic.requests
    assert [t["name"] for t in ask.body["tools"]] == ["check_slots"]
    assert ask.last_user_text == "Is Friday free?"
    assert after_tool.body["messages"][-1]["content"][0]["content"] == result.result


# --- (e) on the engine ---------------------------------------------------------------------


@pytest.mark.slow
async def test_e_the_keyword_spotter_as_an_agents_chain_factory_on_the_engine() -> None:
    from examples.engine_keyword_spotter import run_on_engine

    [call] = await run_on_engine()
    record = call.record
    assert record["status"] == "completed", record
    assert record["ended_reason"] == "agent_hangup"
    assert [(t["role"], t["text"]) for t in record["transcript"]] == [
        ("caller", "Hello?"),
        ("agent", "Hi Sarah, it's Anna."),
        ("caller", "Please cancel it."),
        ("agent", "Done, it is cancelled. Bye!"),
    ]
    assert record["latency"]["turns"] and record["recording_url"]
    assert record["voicemail_detected"] is False
    assert "Done, it is cancelled" in call.carrier_log.heard_text()


BROKEN = """
from nixflex_engine.pipeline import FrameProcessor

def raises(ctx):
    raise RuntimeError("factory bug")

def wrong_type(ctx):
    return [FrameProcessor()]
"""


@pytest.mark.slow
@pytest.mark.parametrize("attr", ["raises", "wrong_type"])
async def test_a_broken_chain_factory_fails_its_calls_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, attr: str
) -> None:
    """(Every other way a factory breaks raises the same ChainFactoryError in the same place:
    tests/calls/test_factories.py.)"""
    from examples.engine_keyword_spotter import AGENT, run_on_engine
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from nixflex_engine.sandbox import serve_app

    module = f"broken_chains_{attr}"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(BROKEN))
    monkeypatch.syspath_prepend(str(tmp_path))
    received: list[dict[str, Any]] = []

    async def hook(request: Request) -> Response:
        received.append(await request.json())
        return Response(status_code=204)

    receiver = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
    async with serve_app(receiver) as hook_url:
        # one call at a time: the second is accepted only if the first released its slot
        calls = await run_on_engine(
            agent={**AGENT, "chain_factory": f"{module}:{attr}", "webhook_url": hook_url + "/hook"},
            allowed=[f"{module}:*"],
            calls=2,
            max_concurrent_calls=1,
            settings={"allow_private_webhook_urls": True},
            timeout_s=30,
        )
        for _ in range(200):  # the webhooks leave right after the record is final
            if len(received) >= 2:
                break
            await asyncio.sleep(0.05)
    for call in calls:
        record = call.record
        assert record["status"] == "completed", record
        assert record["ended_reason"] == "error"
        assert record["ended_at"] and record["transcript"] == []
        assert call.carrier_log.ended_by in ("engine", "stream_closed")  # hung up, not left open
    # the webhook is still sent: the call record as GET /v1/calls/{id} shows it
    by_call = {body["call_id"]: body for body in received}
    assert set(by_call) == {c.record["call_id"] for c in calls}, received
    for body in by_call.values():
        assert (body["event"], body["status"], body["ended_reason"]) == (
            "call.ended",
            "completed",
            "error",
        )
