"""`make demo` runs a whole call through the API: key, agent, number, POST /v1/calls/outbound,
the sandbox carrier playing the person, and the final record."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest

from nixflex_engine.demo import METADATA, run_demo


@pytest.mark.slow
async def test_demo_call_ends_as_scripted(tmp_path: Path) -> None:
    out = io.StringIO()
    result = await run_demo(out=out, var_dir=tmp_path)
    record, heard = result.record, result.heard
    assert record["status"] == "completed", out.getvalue()
    assert record["ended_reason"] == "agent_hangup", out.getvalue()
    assert record["metadata"] == METADATA
    assert result.states[0] == "queued" and result.states[-1] == "completed"
    assert "in-progress" in result.states
    assert heard.protocol_violations == [] and heard.script_errors == []
    roles = [(line["role"], bool(line.get("interrupted"))) for line in record["transcript"]]
    assert roles == [
        ("caller", False),
        ("agent", False),
        ("caller", False),
        ("agent", True),
        ("caller", False),
        ("agent", False),
        ("caller", False),
        ("agent", False),
    ]
    assert record["transcript"][1]["text"] == "Hi, is this Sarah?"
    assert "[END_CALL]" not in heard.heard_text()
    assert record["transcript"][-1]["text"].endswith("Goodbye!")
    assert len(record["latency"]["turns"]) == 3
    assert result.recording_file is not None
    assert await asyncio.to_thread(result.recording_file.exists)
    assert record["recording_duration_seconds"] > 10
    assert record["voicemail_detected"] is False
    assert record["call_summary"] and record["call_successful"] is not None
    assert [hook["event"] for hook in result.webhooks] == ["call.ended"]
    assert result.webhooks[0]["_signature_valid"] is True
    text = out.getvalue()
    for shown in ("call is ringing", "barge-in", "[END_CALL]", "agent : Hi, is this Sarah?"):
        assert shown in text, shown
