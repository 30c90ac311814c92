"""`make demo` runs a whole call: the standard chain, end to end, on the sandbox."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from nixflex_engine.demo import run_demo


@pytest.mark.slow
async def test_demo_call_ends_as_scripted(tmp_path: Path) -> None:
    out = io.StringIO()
    outcome, heard = await run_demo(out=out, recordings_dir=tmp_path)
    assert outcome.ended_reason == "agent_hangup", out.getvalue()
    assert heard.protocol_violations == [] and heard.script_errors == []
    roles = [(line.role, line.interrupted) for line in outcome.transcript]
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
    assert outcome.transcript[1].text == "Hi, is this Sarah?"
    assert "[END_CALL]" not in heard.heard_text()
    assert outcome.transcript[-1].text.endswith("Goodbye!")
    assert len(outcome.latency["turns"]) == 3
    assert outcome.recording_path is not None and outcome.recording_path.exists()
    assert outcome.recording_duration_seconds and outcome.recording_duration_seconds > 10
    assert outcome.voicemail is not None and outcome.voicemail.voicemail_detected is False
