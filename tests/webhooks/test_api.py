"""Through the HTTP API (SQLite and PostgreSQL): the webhook a call sends equals its
``GET /v1/calls/{id}``, dial failures send ``call.failed``, ``GET /v1/calls/{id}/webhooks``,
unsafe URLs refused at registration, and recordings (Range requests, alignment, deletion)."""

from __future__ import annotations

import io
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from nixflex.webhook import verify_webhook_signature

from api.support import Env, assert_error, start_env
from nixflex_engine.calls.dialer import DialError, InstantDialer
from nixflex_engine.calls.recordings import LocalRecordingStore
from nixflex_engine.processors.recorder import TwoChannelRecording
from nixflex_engine.sandbox.fake_twilio import FakeTwilio
from nixflex_engine.store.repositories import utcnow
from webhooks.support import Receiver, wait_for

FAILING = "+15005550001"


@pytest.fixture
async def env(
    database_url: str, fake_twilio: tuple[FakeTwilio, str], tmp_path: Path
) -> AsyncIterator[Env]:
    dialer = InstantDialer({FAILING: DialError("21211", "Invalid 'To' number", 400)})
    async for e in start_env(
        database_url,
        fake_twilio,
        tmp_path,
        dialer=dialer,
        allow_private_webhook_urls=True,
        webhook_poll_interval_seconds=0.05,
    ):
        yield e


async def _dial(env: Env, headers: dict[str, str], agent_id: str, to: str, **body: Any) -> Any:
    return await env.client.post(
        "/v1/calls/outbound",
        json={"agent_id": agent_id, "to_number": to, **body},
        headers=headers,
    )


async def test_call_ended_webhook_is_the_call_record_byte_for_byte(
    env: Env, receiver: Receiver
) -> None:
    account, agent, _ = await env.ready(webhook_url=receiver.url)
    metadata = {"lead": "L-1", "nested": {"b": 2, "a": [True, None]}, "émoji": "✓"}
    r = await _dial(env, account.headers, agent["agent_id"], "+15005550006", metadata=metadata)
    assert r.status_code == 201, r.text
    call_id = r.json()["call_id"]
    repos = env.services.repos
    assert await repos.calls.finish_call(
        call_id,
        "completed",
        "agent_hangup",
        answered_at=utcnow(),
        duration_seconds=12.5,
        transcript=[{"role": "agent", "text": "Hello", "timestamp_ms": 10}],
    )
    record = await repos.calls.update_call(
        call_id, call_summary="Said hello.", caller_sentiment="neutral", call_successful=True
    )
    assert record is not None
    await env.app.state.webhooks.on_call_final(record)  # what AfterCallWork runs
    await wait_for(lambda: receiver.ok_for(call_id, "call.ended") == 1)

    got = await env.client.get(f"/v1/calls/{call_id}", headers=account.headers)
    assert got.status_code == 200
    [sent] = receiver.of(call_id)
    assert sent.body == b'{"event":"call.ended",' + got.content[1:]
    assert sent.json["metadata"] == metadata
    assert verify_webhook_signature(
        sent.body, sent.headers["x-nixflex-signature"], account.key_secret
    )

    listed = await env.client.get(f"/v1/calls/{call_id}/webhooks", headers=account.headers)
    assert listed.status_code == 200, listed.text
    body = listed.json()
    assert body["count"] == 1 and body["limit"] == 25 and body["offset"] == 0
    [hook] = body["webhooks"]
    assert hook["event"] == "call.ended" and hook["status"] == "delivered"
    assert hook["url"] == receiver.url and hook["target"] == "agent"
    assert hook["delivery_id"] == sent.headers["x-nixflex-delivery"]
    assert hook["event_id"] == sent.headers["x-nixflex-event-id"]
    assert [(a["attempt"], a["status_code"], a["outcome"]) for a in hook["attempt_log"]] == [
        (1, 200, "delivered")
    ]
    assert hook["delivered_at"] and hook["next_attempt_at"] is None

    stranger = await env.account()
    assert_error(
        await env.client.get(f"/v1/calls/{call_id}/webhooks", headers=stranger.headers),
        404,
        "call_not_found",
    )
    assert_error(
        await env.client.get("/v1/calls/CAnope/webhooks", headers=account.headers),
        404,
        "call_not_found",
    )
    bad = await env.client.get(f"/v1/calls/{call_id}/webhooks?limit=0", headers=account.headers)
    assert bad.status_code == 400


async def test_rejected_dial_sends_call_failed_to_number_slots(
    env: Env, receiver: Receiver
) -> None:
    account, agent, number = await env.ready()
    for slot in ("webhook", "webhook2"):
        r = await env.client.put(
            f"/v1/integrations/{slot}/number/{number.replace('+', '%2B')}",
            json={"url": f"{receiver.url}?slot={slot}"},
            headers=account.headers,
        )
        assert r.status_code == 200, r.text
    r = await _dial(env, account.headers, agent["agent_id"], FAILING, metadata={"k": "v"})
    err = assert_error(r, 502, "outbound_failed")
    call_id = err["details"]["call_id"]
    await wait_for(lambda: len(receiver.of(call_id)) == 2)
    for sent in receiver.of(call_id):
        assert sent.json["event"] == "call.failed"
        assert sent.json["status"] == "failed" and sent.json["metadata"] == {"k": "v"}
        assert sent.json["twilio_error"]["code"] == "21211"
    listed = await env.client.get(f"/v1/calls/{call_id}/webhooks", headers=account.headers)
    assert {h["target"] for h in listed.json()["webhooks"]} == {"number", "number2"}


async def test_unsafe_webhook_urls_refused_at_registration(
    database_url: str, fake_twilio: tuple[FakeTwilio, str], tmp_path: Path
) -> None:
    async for env in start_env(database_url, fake_twilio, tmp_path):  # private URLs not allowed
        account = await env.account()
        for url in (
            "http://127.0.0.1:8080/hook",
            "http://localhost/hook",
            "http://[::1]/hook",
            "http://10.0.0.5/hook",
            "http://169.254.169.254/latest/meta-data",
            "ftp://hooks.example.com/x",
        ):
            r = await env.client.post(
                "/v1/agents",
                json={"name": "A", "system_prompt": "x", "webhook_url": url},
                headers=account.headers,
            )
            assert r.status_code == 400, (url, r.text)
            assert r.json()["error"]["details"].get("field") == "webhook_url", r.text
        agent = await env.agent(account, webhook_url="https://hooks.example.com/x")
        assert agent["webhook_url"] == "https://hooks.example.com/x"
        number = await env.number(account, agent["agent_id"])
        r = await env.client.put(
            f"/v1/integrations/webhook/number/{number.replace('+', '%2B')}",
            json={"url": "http://192.168.1.10/hook"},
            headers=account.headers,
        )
        assert r.status_code == 400, r.text


# --------------------------------------------------------------------------------------------
# recordings


def _tone(freq: float, ms: int, rate: int = 8000) -> bytes:
    t = np.arange(round(ms * rate / 1000)) / rate
    return (np.sin(2 * np.pi * freq * t) * 12000).astype("<i2").tobytes()


async def _recorded_call(env: Env) -> tuple[Any, str, bytes]:
    """A finished call whose recording has the caller from 0 ms and the agent from 500 ms."""
    account, agent, _ = await env.ready()
    r = await _dial(env, account.headers, agent["agent_id"], "+15005550006")
    call_id = r.json()["call_id"]
    rec = TwoChannelRecording()
    rec.add_caller(_tone(440, 1000), 0)
    rec.add_agent(_tone(1000, 500), 500)
    store: LocalRecordingStore = env.services.recordings
    path = rec.save(store.spool_path(call_id))
    repos = env.services.repos
    assert await repos.calls.finish_call(
        call_id,
        "completed",
        "caller_hangup",
        answered_at=utcnow(),
        recording_path=str(path),
        recording_duration_seconds=rec.duration_seconds,
        outbox=False,
    )
    return account, call_id, path.read_bytes()


async def test_recording_served_with_ranges(env: Env) -> None:
    account, call_id, data = await _recorded_call(env)
    size = len(data)
    url = f"/v1/calls/{call_id}/recording"
    h = account.headers

    record = (await env.client.get(f"/v1/calls/{call_id}", headers=h)).json()
    assert record["recording_url"] == f"{env.settings.public_base_url}{url}"
    assert record["recording_duration_seconds"] == pytest.approx(1.0)

    full = await env.client.get(url, headers=h)
    assert full.status_code == 200
    assert full.headers["content-type"] == "audio/wav"
    assert full.headers["accept-ranges"] == "bytes"
    assert int(full.headers["content-length"]) == size and full.content == data

    head = await env.client.head(url, headers=h)
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == size
    head = await env.client.head(url, headers={**h, "Range": "bytes=0-9"})
    assert head.status_code == 206 and head.headers["content-range"] == f"bytes 0-9/{size}"

    cases = {
        "bytes=0-43": (0, 43),
        "bytes=100-": (100, size - 1),
        "bytes=-10": (size - 10, size - 1),
        f"bytes=10-{size * 5}": (10, size - 1),
        f"bytes=-{size + 99}": (0, size - 1),
        f"bytes={size - 1}-{size - 1}": (size - 1, size - 1),
    }
    for header, (start, end) in cases.items():
        part = await env.client.get(url, headers={**h, "Range": header})
        assert part.status_code == 206, header
        assert part.headers["content-range"] == f"bytes {start}-{end}/{size}", header
        assert int(part.headers["content-length"]) == end - start + 1
        assert part.content == data[start : end + 1], header

    for header in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}", "bytes=-0"):
        r = await env.client.get(url, headers={**h, "Range": header})
        assert_error(r, 416, "range_not_satisfiable")
        assert r.headers["content-range"] == f"bytes */{size}"

    # ignored (RFC 9110): several ranges, other units, nonsense, reversed
    for header in ("bytes=0-1,5-6", "items=0-1", "bytes=abc", "bytes=9-2", "bytes=-"):
        r = await env.client.get(url, headers={**h, "Range": header})
        assert r.status_code == 200 and r.content == data, header

    # the file read back in pieces is the file
    pieces = b""
    for start in range(0, size, 4096):
        r = await env.client.get(url, headers={**h, "Range": f"bytes={start}-{start + 4095}"})
        pieces += r.content
    assert pieces == data

    stranger = await env.account()
    assert_error(await env.client.get(url, headers=stranger.headers), 404, "call_not_found")
    assert_error(await env.client.get(url), 401, "invalid_api_key")


async def test_recording_alignment_caller_left_agent_right(env: Env) -> None:
    account, call_id, _ = await _recorded_call(env)
    r = await env.client.get(f"/v1/calls/{call_id}/recording", headers=account.headers)
    with wave.open(io.BytesIO(r.content)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (2, 2, 8000)
        frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2)
    left, right = frames[:, 0].astype(float), frames[:, 1].astype(float)
    assert len(frames) == 8000

    def rms(x: Any) -> float:
        return float(np.sqrt(np.mean(x**2)))

    assert rms(left[:4000]) > 5000 and rms(left[4000:]) > 5000  # caller all along
    assert rms(right[:3990]) < 1.0  # the agent is silent before 500 ms ...
    assert rms(right[4010:]) > 5000  # ... and speaks from 500 ms
    first_agent_sample = int(np.argmax(np.abs(right) > 0))
    assert abs(first_agent_sample - 4000) <= 1
    # and each channel is its own tone: 440 Hz left, 1 kHz right
    for channel, freq in ((left[:4000], 440), (right[4000:], 1000)):
        spectrum = np.abs(np.fft.rfft(channel))
        peak_hz = np.argmax(spectrum) * 8000 / len(channel)
        assert abs(peak_hz - freq) < 5


async def test_no_recording_and_deleted_with_the_call(env: Env) -> None:
    account, agent, _ = await env.ready(record_call=False)
    r = await _dial(env, account.headers, agent["agent_id"], "+15005550006")
    bare = r.json()["call_id"]
    assert await env.services.repos.calls.finish_call(bare, "busy", "busy", outbox=False)
    assert (await env.client.get(f"/v1/calls/{bare}", headers=account.headers)).json()[
        "recording_url"
    ] is None
    assert_error(
        await env.client.get(f"/v1/calls/{bare}/recording", headers=account.headers),
        404,
        "recording_not_found",
    )

    account, call_id, _ = await _recorded_call(env)
    path = env.services.recordings.spool_path(call_id)
    assert path.is_file()
    r = await env.client.delete(f"/v1/calls/{call_id}", headers=account.headers)
    assert r.status_code == 200, r.text
    assert not path.exists()
    assert_error(
        await env.client.get(f"/v1/calls/{call_id}/recording", headers=account.headers),
        404,
        "call_not_found",
    )


async def test_recording_file_gone_is_recording_not_found(env: Env) -> None:
    account, call_id, _ = await _recorded_call(env)
    env.services.recordings.spool_path(call_id).unlink()
    assert_error(
        await env.client.get(f"/v1/calls/{call_id}/recording", headers=account.headers),
        404,
        "recording_not_found",
    )
