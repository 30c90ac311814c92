"""``make demo-campaign`` runs to completion with its mix of outcomes, and its counters match
the calls placed."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from nixflex_engine.demo_campaign import RECIPIENTS, run_demo_campaign


@pytest.mark.slow
async def test_demo_campaign(tmp_path: Path) -> None:
    out = io.StringIO()
    body = await run_demo_campaign(out=out, workdir=tmp_path)
    assert body["status"] == "completed"
    rows = {row["phone_number"]: row for row in body["recipients"]}
    assert len(rows) == len(RECIPIENTS) == 20
    assert body["calls_placed"] == sum(row["attempts"] for row in rows.values())
    for number, _, first, then in RECIPIENTS:
        row = rows[number]
        outcomes = [c["outcome"] for c in row["calls"]]
        if first == "answer":
            assert (row["state"], outcomes) == ("completed", ["completed"]), row
        elif first in ("busy", "no-answer"):
            assert outcomes == [first, "completed" if then == "answer" else then], row
            assert row["state"] == ("completed" if then == "answer" else "failed")
        else:  # voicemail: reached, retried once when detected as a machine
            assert row["state"] == "completed" and outcomes[0] in ("voicemail", "completed")
    text = out.getvalue()
    assert "progress: queued  0 | in progress  0" in text and "retry in 3 s" in text
