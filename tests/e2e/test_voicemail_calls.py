"""Each voicemail action as a whole call: the carrier answers with a recorded greeting and a
beep (``sandbox/voicemail_scripts.py``) and reports Twilio's async AMD; the engine acts per the
call's ``voicemail_action``."""

from __future__ import annotations

import asyncio

import pytest

from nixflex_engine.sandbox.carrier import CarrierScript

from .conftest import OPENER, Stack, StackFactory

GREETING = "en_personal_beep_short"
MESSAGE = "Hi Sarah, this is Anna from Riverside Clinic. Please call us back. Thank you."


@pytest.mark.slow
async def test_each_voicemail_action_as_a_whole_call(make_stack: StackFactory) -> None:
    s: Stack = await make_stack(speed=1.0)
    t = await s.tenant()
    numbers = {"hangup": "+15550125001", "leave_message": "+15550125002", "ignore": "+15550125003"}
    for number in numbers.values():
        s.carrier.set_script(number, CarrierScript.voicemail(GREETING, ring_s=0.3))
    responses = await asyncio.gather(
        *(
            s.dial(t, number, voicemail_action=action, voicemail_message=MESSAGE)
            for action, number in numbers.items()
        )
    )
    ids = {a: r.json()["call_id"] for a, r in zip(numbers, responses, strict=True)}
    records = {a: await s.wait_final(t, call_id, 60) for a, call_id in ids.items()}
    calls = {a: s.carrier.calls[call_id] for a, call_id in ids.items()}
    for record in records.values():
        assert record["status"] == "completed"
        assert record["voicemail_detected"] is True
        assert record["voicemail_detection_method"] in ("transcript", "amd", "beep")
        assert record["transcript"][0]["role"] == "caller"  # the greeting is kept

    hangup = records["hangup"]
    assert hangup["ended_reason"] == "voicemail"
    assert [line["role"] for line in hangup["transcript"]] == ["caller"]
    assert (
        calls["hangup"].ended_by in ("engine", "stream_closed")
        and calls["hangup"].heard_text() == ""
    )

    left = records["leave_message"]
    assert left["ended_reason"] == "voicemail"
    assert [line["text"] for line in left["transcript"] if line["role"] == "agent"] == [MESSAGE]
    heard = calls["leave_message"].heard_text().replace(".", ". ").split()
    assert heard == MESSAGE.split()  # word for word, after the beep
    assert calls["leave_message"].ended_by in ("engine", "stream_closed")

    ignored = records["ignore"]
    agent = [line["text"] for line in ignored["transcript"] if line["role"] == "agent"]
    assert agent and agent[0] == OPENER  # carried on as if a person answered
    assert MESSAGE not in " ".join(agent)
    # the machine stops recording (or, on a slow machine, the agent gives up on the silence)
    assert ignored["ended_reason"] in ("caller_hangup", "silence_timeout"), ignored
