"""History-aware outbound, whole calls: the second call to a number "knows" the first.

Two calls through ``POST /v1/calls/outbound`` on the e2e stack (engine under uvicorn, sandbox
carrier, fake Deepgram and Anthropic): the first is analysed (the fake answers the analysis
deterministically) and its summary is stored; the system prompt the fake Anthropic receives
for the second call's conversation carries that summary in the history block, with the date
and outcome. (Other accounts never see it: ``test_history.py``, at the repository.)
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from e2e.conftest import Stack, StackFactory, make_stack  # noqa: F401
from nixflex_engine.processors.prompt import HISTORY_SECTION_TITLE
from nixflex_engine.sandbox.callee import Say, Silence, Step, UntilAgentSilent
from nixflex_engine.sandbox.carrier import CarrierScript

TO = "+15550177001"


def _callee() -> list[Step]:
    return [
        Silence(300),
        Say("Hello?"),
        UntilAgentSilent(),
        Say("Tuesday at ten works for me. Goodbye."),
        UntilAgentSilent(timeout_ms=10_000),
        Silence(4000),  # long enough (>= 5 s) to be analysed
    ]


def _system_text(body: dict[str, Any]) -> str:
    system = body.get("system")
    if isinstance(system, str):
        return system
    return "\n".join(b.get("text", "") for b in system or [] if isinstance(b, dict))


async def _summarised(s: Stack, tenant: Any, call_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        record = await s.get(tenant, call_id)
        if record.get("call_summary"):
            return record
        keys = ("duration_seconds", "ended_reason", "transcript")
        assert time.monotonic() < deadline, {k: record[k] for k in keys}
        await asyncio.sleep(0.1)


def _conversation_prompts(s: Stack, since: int) -> list[str]:
    """System prompts of conversation requests (not the analysis: it forces a tool)."""
    return [
        _system_text(r.body) for r in s.anthropic.requests[since:] if not r.body.get("tool_choice")
    ]


@pytest.mark.slow
async def test_second_call_knows_the_first(
    make_stack: StackFactory,  # noqa: F811
) -> None:
    s: Stack = await make_stack(speed=1.0)  # real time: call lengths as the engine sees them
    t = await s.tenant()
    s.carrier.set_script(TO, CarrierScript.answer(_callee(), ring_s=0.2))

    before_first = len(s.anthropic.requests)
    r = await s.dial(t, TO, dynamic_vars={"patient_name": "Sarah"})
    assert r.status_code == 201, r.text
    first_id = r.json()["call_id"]
    first = await s.wait_final(t, first_id)
    assert first["status"] == "completed"
    first = await _summarised(s, t, first_id)
    summary = first["call_summary"]
    # the first call had no history
    assert all(HISTORY_SECTION_TITLE not in p for p in _conversation_prompts(s, before_first))

    before_second = len(s.anthropic.requests)
    r = await s.dial(t, TO, dynamic_vars={"patient_name": "Sarah"})
    assert r.status_code == 201, r.text
    second_id = r.json()["call_id"]
    await s.wait_final(t, second_id)
    prompts = _conversation_prompts(s, before_second)
    assert prompts, "the second call never reached the LLM"
    prompt = prompts[0]
    assert HISTORY_SECTION_TITLE in prompt
    history = prompt.split(HISTORY_SECTION_TITLE, 1)[1]
    assert " ".join(summary.split()) in history
    assert first["ended_at"][:10] in history  # dated
    assert "ended: agent_hangup" in history or "ended: caller_hangup" in history
