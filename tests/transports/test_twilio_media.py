"""Twilio media streams without a network: the protocol core, the playout model, and the
input/output processors over an in-memory socket."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import pytest
from twilio.request_validator import RequestValidator

from nixflex_engine.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    DTMFFrame,
    EndCallFrame,
    Frame,
    InputAudioFrame,
    InterruptionFrame,
    MarkFrame,
    MarkPlayedFrame,
    OutputAudioFrame,
    PlaybackClearedFrame,
    PlayedAudioFrame,
    TransportStartedFrame,
    TTSStoppedFrame,
)
from nixflex_engine.pipeline import (
    DOWNSTREAM,
    UPSTREAM,
    FrameDirection,
    FrameProcessor,
    Pipeline,
    PipelineTask,
)
from nixflex_engine.transports.twilio_media import (
    REASON_SOCKET_LOST,
    REASON_STREAM_STOPPED,
    StreamAuthRequest,
    TwilioMediaTransport,
    signature_authorizer,
    twilio_signature_valid,
)
from nixflex_engine.transports.twilio_protocol import (
    FRAME_BYTES,
    ConnectedEvent,
    DtmfEvent,
    MarkEvent,
    MediaEvent,
    PlayoutModel,
    Reframer,
    Skip,
    StartEvent,
    StopEvent,
    TwilioMediaProtocol,
)

SID = "MZ" + "a" * 32
CALL = "CA" + "b" * 32
ACCOUNT = "AC" + "c" * 32


def start_msg(seq: int = 1, **fmt: Any) -> str:
    media_format = {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1, **fmt}
    return json.dumps(
        {
            "event": "start",
            "sequenceNumber": str(seq),
            "streamSid": SID,
            "start": {
                "streamSid": SID,
                "accountSid": ACCOUNT,
                "callSid": CALL,
                "tracks": ["inbound"],
                "customParameters": {"call_id": "abc", "token": "t0k"},
                "mediaFormat": media_format,
            },
        }
    )


def media_msg(seq: int, chunk: int, audio: bytes = b"\x01" * 160, **over: Any) -> str:
    media = {
        "track": "inbound",
        "chunk": str(chunk),
        "timestamp": str(chunk * 20),
        "payload": base64.b64encode(audio).decode(),
        **over,
    }
    return json.dumps(
        {"event": "media", "sequenceNumber": str(seq), "streamSid": SID, "media": media}
    )


def started() -> TwilioMediaProtocol:
    p = TwilioMediaProtocol()
    assert isinstance(p.receive(start_msg()), StartEvent)
    return p


# --- parsing -------------------------------------------------------------------------------


def test_connected_and_start_parse_into_typed_events() -> None:
    p = TwilioMediaProtocol()
    ev = p.receive('{"event":"connected","protocol":"Call","version":"1.0.0"}')
    assert ev == ConnectedEvent(protocol="Call", version="1.0.0")
    start = p.receive(start_msg())
    assert start == StartEvent(
        stream_sid=SID,
        call_sid=CALL,
        account_sid=ACCOUNT,
        tracks=("inbound",),
        custom_parameters={"call_id": "abc", "token": "t0k"},
        encoding="audio/x-mulaw",
        sample_rate=8000,
        channels=1,
        sequence_number=1,
    )
    assert p.stream_sid == SID and p.start == start


def test_media_payload_is_decoded_and_counters_are_ints() -> None:
    p = started()
    audio = bytes(range(160))
    ev = p.receive(media_msg(2, 1, audio))
    assert ev == MediaEvent(
        payload=audio, timestamp_ms=20, chunk=1, track="inbound", sequence_number=2
    )
    assert p.stats.media == 1 and p.last_sequence_anomaly is None


def test_mark_dtmf_stop_parse() -> None:
    p = started()
    mark = p.receive(
        json.dumps(
            {"event": "mark", "sequenceNumber": "2", "streamSid": SID, "mark": {"name": "utt-7"}}
        )
    )
    assert mark == MarkEvent("utt-7", 2)
    dtmf = p.receive(
        json.dumps(
            {
                "event": "dtmf",
                "streamSid": SID,
                "sequenceNumber": "3",
                "dtmf": {"track": "inbound_track", "digit": "1"},
            }
        )
    )
    assert dtmf == DtmfEvent("1", "inbound_track", 3)
    stop = p.receive(
        json.dumps(
            {
                "event": "stop",
                "sequenceNumber": "4",
                "streamSid": SID,
                "stop": {"accountSid": ACCOUNT, "callSid": CALL},
            }
        )
    )
    assert stop == StopEvent(call_sid=CALL, account_sid=ACCOUNT, sequence_number=4)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{not json", "malformed_json"),
        ("[1, 2]", "malformed_json"),
        ('{"event": "party"}', "unknown_event"),
        ('{"no_event": 1}', "missing_field"),
        (media_msg(2, 1, payload="@@@not-base64@@@"), "bad_base64"),
        (media_msg(2, 1, payload="AAE"), "bad_base64"),  # bad padding
        (media_msg(2, 1, audio=b""), "empty_payload"),
        (media_msg(2, 1, timestamp="soon"), "bad_field"),
        (media_msg(2, 1, track="outbound"), "unexpected_track"),
        (json.dumps({"event": "media", "streamSid": SID}), "missing_field"),
        (json.dumps({"event": "media", "streamSid": SID, "media": {}}), "missing_field"),
        (json.dumps({"event": "mark", "streamSid": SID, "mark": {}}), "missing_field"),
        (json.dumps({"event": "dtmf", "streamSid": SID, "dtmf": {"digit": ""}}), "missing_field"),
        (media_msg(2, 1).replace(SID, "MZ" + "f" * 32), "stream_sid_mismatch"),
        (start_msg(), "duplicate_start"),
    ],
)
def test_bad_messages_become_skips_never_exceptions(text: str, reason: str) -> None:
    p = started()
    result = p.receive(text)
    assert isinstance(result, Skip) and result.reason == reason, result
    assert p.stats.skipped == {reason: 1}
    # The stream is unaffected: the next good message parses.
    assert isinstance(p.receive(media_msg(3, 2)), MediaEvent)


def test_binary_frames_are_refused() -> None:
    p = started()
    result = p.receive_binary(b"\xff" * 160)
    assert result == Skip("binary_frame", "160 bytes")
    assert p.stats.skipped == {"binary_frame": 1}


def test_media_before_start_is_skipped() -> None:
    p = TwilioMediaProtocol()
    result = p.receive(media_msg(2, 1))
    assert isinstance(result, Skip) and result.reason == "before_start"


@pytest.mark.parametrize(
    "fmt",
    [{"encoding": "audio/l16"}, {"sampleRate": 16000}, {"channels": 2}, {"sampleRate": "x"}],
)
def test_wrong_media_format_skips_the_start(fmt: dict[str, Any]) -> None:
    p = TwilioMediaProtocol()
    result = p.receive(start_msg(**fmt))
    assert isinstance(result, Skip) and result.event == "start"
    assert result.reason in {"unsupported_media_format", "bad_field"}
    assert p.stream_sid is None


def test_out_of_order_sequence_numbers_are_delivered_and_counted() -> None:
    p = started()
    order = [2, 3, 5, 4, 6, 6, 7]
    events = [p.receive(media_msg(seq, i + 1)) for i, seq in enumerate(order)]
    assert all(isinstance(e, MediaEvent) for e in events)
    assert [e.sequence_number for e in events if isinstance(e, MediaEvent)] == order
    # 5 skips 4 (one gap); 4 and the repeated 6 come late.
    assert p.stats.gaps == 1 and p.stats.out_of_order == 2
    p.receive(media_msg(3, 9))
    assert p.last_sequence_anomaly == "out_of_order"
    p.receive(media_msg(8, 10))
    assert p.last_sequence_anomaly is None


def test_missing_sequence_number_is_tolerated() -> None:
    p = started()
    msg = json.loads(media_msg(2, 1))
    del msg["sequenceNumber"]
    ev = p.receive(json.dumps(msg))
    assert isinstance(ev, MediaEvent) and ev.sequence_number is None


# --- serialization -------------------------------------------------------------------------


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def test_outbound_messages_are_exact() -> None:
    p = started()
    audio = bytes(range(160))
    assert p.media_message(audio) == _dumps(
        {"event": "media", "streamSid": SID, "media": {"payload": base64.b64encode(audio).decode()}}
    )
    assert p.mark_message('utt "7"') == _dumps(
        {"event": "mark", "streamSid": SID, "mark": {"name": 'utt "7"'}}
    )
    assert p.clear_message() == _dumps({"event": "clear", "streamSid": SID})


def test_outbound_needs_a_started_stream() -> None:
    with pytest.raises(RuntimeError):
        TwilioMediaProtocol().media_message(b"\xff" * 160)


def test_reframer_cuts_160_byte_frames_and_pads_with_mulaw_silence() -> None:
    r = Reframer()
    assert r.push(b"\x01" * 100) == b""
    out = r.push(b"\x02" * 300)
    assert len(out) == 320 and r.pending == 80
    assert out[:100] == b"\x01" * 100 and out[100:] == b"\x02" * 220
    flushed = r.flush()
    assert flushed == b"\x02" * 80 + b"\xff" * 80 and r.pending == 0
    assert r.flush() == b""
    r.push(b"\x03" * 10)
    assert r.drop() == 10 and r.pending == 0


# --- the playout model ---------------------------------------------------------------------


def test_playout_schedules_back_to_back_and_reports_heard_on_clear() -> None:
    m = PlayoutModel()
    assert m.schedule(1000.0, 8000, "c1") == 1000.0  # 1 s of audio
    assert m.schedule(1100.0, 4000, "c2") == 2000.0  # queued behind it
    assert m.buffer_end_ms == 2500.0 and m.speaking
    m.add_mark(1100.0, "c2")
    out = m.clear(2200.0)
    assert out.heard == {"c1": 1000.0, "c2": 200.0} and out.was_speaking
    assert not m.speaking and m.buffer_end_ms == 2200.0
    echo = m.echo(2230.0, "c2")
    # A mark covers all audio sent since the previous mark: here c1 and c2.
    assert echo is not None and echo.cleared and echo.heard_ms == 1200.0


def test_playout_chunks_not_started_are_not_heard() -> None:
    m = PlayoutModel()
    m.schedule(0.0, 1600, "a")  # 200 ms
    m.schedule(0.0, 1600, "b")
    assert m.clear(150.0).heard == {"a": 150.0}


def test_playout_speed_scales_the_clock() -> None:
    m = PlayoutModel(speed=10.0)
    m.schedule(0.0, 8000, "c")  # 1000 audio ms = 100 clock ms
    assert m.buffer_end_ms == pytest.approx(100.0)
    assert m.clear(30.0).heard == {"c": pytest.approx(300.0)}


def test_marks_echo_in_order_with_full_heard_and_confirm_the_drain() -> None:
    m = PlayoutModel()
    m.schedule(0.0, 1600, "a")
    m.add_mark(0.0, "a")
    m.schedule(0.0, 800, "b")
    m.add_mark(0.0, "b")
    assert m.poll_stopped(300.0) is None  # drained per model, but marks pending
    a = m.echo(200.0, "a")
    assert a is not None and not a.cleared and a.heard_ms == 200.0
    b = m.echo(290.0, "b")
    assert b is not None and b.heard_ms == 100.0 and m.pending_marks == 0
    assert m.poll_stopped(290.0) is not None and not m.speaking
    assert m.echo(300.0, "nope") is None


def test_early_echo_reanchors_the_drain() -> None:
    m = PlayoutModel()
    m.schedule(0.0, 8000, "a")  # model: drains at 1000
    m.add_mark(0.0, "a")
    m.echo(900.0, "a")  # Twilio says it has played already
    assert m.buffer_end_ms == 900.0 and m.poll_stopped(900.0) == 900.0


def test_mark_echoed_after_clear_for_audio_already_played_is_not_cleared() -> None:
    m = PlayoutModel()
    m.schedule(0.0, 800, "a")  # 100 ms, done at 100
    m.add_mark(0.0, "a")
    m.schedule(0.0, 800, "b")
    m.add_mark(0.0, "b")
    m.clear(150.0)
    a, b = m.echo(160.0, "a"), m.echo(160.0, "b")
    assert a is not None and not a.cleared and a.heard_ms == 100.0
    assert b is not None and b.cleared and b.heard_ms == 50.0


def test_overdue_marks_stop_speaking_after_the_timeout() -> None:
    m = PlayoutModel(mark_timeout_ms=500.0)
    m.schedule(0.0, 800, "a")
    m.add_mark(0.0, "a")
    assert m.next_deadline() == 600.0
    assert m.poll_stopped(599.0) is None
    assert m.poll_stopped(600.0) == 100.0
    assert [x.name for x in m.overdue_marks(600.0)] == ["a"]


def test_a_chunk_spanning_a_buffer_underrun_keeps_its_first_part() -> None:
    m = PlayoutModel()
    m.schedule(0.0, 800, "a")  # 0-100
    assert m.poll_stopped(120.0) == 100.0
    m.schedule(120.0, 800, "a")  # 120-220, the TTS was late
    m.schedule(120.0, 800, "b")  # 220-320
    assert m.clear(170.0).heard == {"a": 150.0}


# --- signature -----------------------------------------------------------------------------


async def test_signature_hook_checks_the_wss_url_and_the_parameters() -> None:
    url = "wss://agent.example.com/media"
    sig = RequestValidator("secret").compute_signature(url, {})
    assert twilio_signature_valid("secret", url, sig)
    assert not twilio_signature_valid("other", url, sig)
    assert not twilio_signature_valid("secret", url + "x", sig)
    assert not twilio_signature_valid("secret", url, None)
    start = StartEvent(stream_sid=SID, call_sid=CALL, custom_parameters={"token": "ok"})

    async def check(params: Any) -> bool:
        return bool(params.get("token") == "ok")

    auth = signature_authorizer("secret", check_parameters=check)
    headers = {"x-twilio-signature": sig}
    assert await auth(StreamAuthRequest(url, headers, start, start.custom_parameters))
    bad_token = {"token": "no"}
    assert not await auth(StreamAuthRequest(url, headers, start, bad_token))
    assert not await auth(StreamAuthRequest(url, {}, start, start.custom_parameters))


# --- processors over an in-memory socket ---------------------------------------------------


class MemorySocket:
    """A MediaSocket double: the test feeds inbound messages and reads what was sent."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        self.sent: list[dict[str, Any]] = []
        self.closed_with: int | None = None
        self.fail_sends = False

    async def receive(self) -> str | bytes | None:
        if self.closed_with is not None:
            return None
        return await self.inbox.get()

    async def send_text(self, text: str) -> None:
        if self.fail_sends or self.closed_with is not None:
            raise ConnectionError("gone")
        self.sent.append(json.loads(text))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.closed_with is None:
            self.closed_with = code

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.sent if m["event"] == kind]


class ManualClock:
    def __init__(self) -> None:
        self.t = 0.0

    def now_ms(self) -> float:
        return self.t


Seen = list[tuple[Frame, FrameDirection]]


class Harness:
    def __init__(self, *, clock: ManualClock | None = None, **kw: Any) -> None:
        self.socket = MemorySocket()
        self.transport = TwilioMediaTransport(self.socket, **kw)
        self.seen: Seen = []
        self.task = PipelineTask(
            Pipeline([self.transport.input(), self.transport.output()]),
            call_id="call-1",
            clock=clock,
            observers=[lambda f, d: self.seen.append((f, d))],
        )
        self.runner: asyncio.Task[Any] | None = None

    async def __aenter__(self) -> Harness:
        self.runner = asyncio.create_task(self.task.run())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        if not self.task.done:
            await self.task.cancel()
        await asyncio.wait_for(self.runner, 5)
        assert self.task.tasks.pending == 0

    async def feed(self, *msgs: str | bytes | None) -> None:
        for m in msgs:
            await self.socket.inbox.put(m)
        await settle()

    def frames(self, kind: type[Frame], direction: FrameDirection = DOWNSTREAM) -> list[Any]:
        return [f for f, d in self.seen if isinstance(f, kind) and d == direction]


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def mark_echo(name: str, seq: int = 50) -> str:
    return json.dumps(
        {"event": "mark", "sequenceNumber": str(seq), "streamSid": SID, "mark": {"name": name}}
    )


async def test_input_emits_started_audio_dtmf_and_stop_cancels_with_caller_hangup() -> None:
    async with Harness() as h:
        await h.feed('{"event":"connected","protocol":"Call","version":"1.0.0"}', start_msg())
        (started_frame,) = h.frames(TransportStartedFrame)
        assert started_frame.stream_sid == SID and started_frame.call_sid == CALL
        assert started_frame.custom_parameters == {"call_id": "abc", "token": "t0k"}
        await h.feed(
            media_msg(2, 1, b"\x10" * 160),
            "{broken",
            b"\x00\x01",
            '{"event":"weird"}',
            media_msg(3, 2, b"\x11" * 160),
            json.dumps(
                {"event": "dtmf", "streamSid": SID, "sequenceNumber": "4", "dtmf": {"digit": "7"}}
            ),
        )
        audio = h.frames(InputAudioFrame)
        assert [(a.audio[0], a.timestamp_ms) for a in audio] == [(0x10, 20), (0x11, 40)]
        assert [d.digit for d in h.frames(DTMFFrame)] == ["7"]
        assert not h.task.done
        assert h.transport.protocol.stats.skipped == {
            "malformed_json": 1,
            "binary_frame": 1,
            "unknown_event": 1,
        }
        await h.feed(json.dumps({"event": "stop", "sequenceNumber": "5", "streamSid": SID}))
        assert h.runner is not None
        result = await asyncio.wait_for(h.runner, 2)
        assert result.cancelled and result.reason == REASON_STREAM_STOPPED == "caller_hangup"
    assert h.socket.closed_with == 1000


async def test_socket_loss_cancels_with_socket_lost() -> None:
    async with Harness(start=StartEvent(stream_sid=SID, call_sid=CALL)) as h:
        await settle()
        assert len(h.frames(TransportStartedFrame)) == 1  # start was read before the run
        await h.feed(None)
        assert h.runner is not None
        result = await asyncio.wait_for(h.runner, 2)
        assert result.cancelled and result.reason == REASON_SOCKET_LOST


def _both(h: Harness, kind: type[Frame]) -> list[Any]:
    up, down = h.frames(kind, UPSTREAM), h.frames(kind, DOWNSTREAM)
    assert up == down, f"{kind.__name__} not pushed both ways"
    return down


async def test_output_reframes_sends_marks_and_reports_playback() -> None:
    clock = ManualClock()
    clock.t = 1000.0
    async with Harness(clock=clock, start=StartEvent(stream_sid=SID, call_sid=CALL)) as h:
        await settle()
        await h.task.queue_frame(OutputAudioFrame(audio=b"\x01" * 400, chunk_id="c1"))
        media = h.socket.events("media")
        assert len(media) == 2  # 320 sent, 80 held back
        assert all(m["streamSid"] == SID for m in h.socket.sent)
        assert [base64.b64decode(m["media"]["payload"]) for m in media] == [b"\x01" * 160] * 2
        await h.task.queue_frame(MarkFrame(name="c1"))
        media = h.socket.events("media")
        assert len(media) == 3
        assert base64.b64decode(media[2]["media"]["payload"]) == b"\x01" * 80 + b"\xff" * 80
        assert h.socket.sent[-1] == {"event": "mark", "streamSid": SID, "mark": {"name": "c1"}}
        (started_speaking,) = _both(h, BotStartedSpeakingFrame)
        assert started_speaking.at_ms == 1000.0
        played = _both(h, PlayedAudioFrame)
        assert [(len(p.audio), p.play_at_ms, p.chunk_id) for p in played] == [
            (320, 1000.0, "c1"),
            (160, 1040.0, "c1"),
        ]
        assert len(h.frames(OutputAudioFrame)) == 1 and len(h.frames(MarkFrame)) == 1
        clock.t = 1070.0
        await h.feed(mark_echo("c1"))
        (played_mark,) = _both(h, MarkPlayedFrame)
        assert played_mark == MarkPlayedFrame(name="c1", heard_ms=60.0, cleared=False)
        (stopped,) = _both(h, BotStoppedSpeakingFrame)
        assert stopped.at_ms == 1060.0  # the model's drain time (the echo came after it)


async def test_interruption_clears_and_reports_heard_per_chunk() -> None:
    clock = ManualClock()
    async with Harness(clock=clock, start=StartEvent(stream_sid=SID, call_sid=CALL)) as h:
        await settle()
        await h.task.queue_frame(OutputAudioFrame(audio=b"\x01" * 1600, chunk_id="a"))
        await h.task.queue_frame(MarkFrame(name="a"))
        await h.task.queue_frame(OutputAudioFrame(audio=b"\x02" * 1600, chunk_id="b"))
        await h.task.queue_frame(MarkFrame(name="b"))
        await h.task.queue_frame(OutputAudioFrame(audio=b"\x03" * 100, chunk_id="c"))
        clock.t = 250.0
        await h.task.queue_frame(InterruptionFrame())
        assert h.socket.sent[-1] == {"event": "clear", "streamSid": SID}
        (cleared,) = _both(h, PlaybackClearedFrame)
        assert cleared.at_ms == 250.0 and cleared.heard == {"a": 200.0, "b": 50.0}
        assert [f.at_ms for f in _both(h, BotStoppedSpeakingFrame)] == [250.0]
        down = [type(f).__name__ for f, d in h.seen if d == DOWNSTREAM]
        assert down.index("PlaybackClearedFrame") < down.index("InterruptionFrame")
        # Twilio echoes the pending marks at once; the partial "c" was never sent.
        await h.feed(mark_echo("a", 60), mark_echo("b", 61))
        marks = _both(h, MarkPlayedFrame)
        assert [(m.name, m.heard_ms, m.cleared) for m in marks] == [
            ("a", 200.0, False),
            ("b", 50.0, True),
        ]
        assert len(h.socket.events("media")) == 20


async def test_end_call_is_held_until_the_last_mark_is_echoed() -> None:
    clock = ManualClock()
    async with Harness(clock=clock, start=StartEvent(stream_sid=SID, call_sid=CALL)) as h:
        await settle()
        await h.task.queue_frame(OutputAudioFrame(audio=b"\x01" * 800, chunk_id="bye"))
        await h.task.queue_frame(MarkFrame(name="bye"))
        await h.task.queue_frame(EndCallFrame(reason="agent_hangup"))
        await settle()
        assert h.transport.output().holding_end_call and not h.task.done
        clock.t = 120.0
        await h.feed(mark_echo("bye"))
        assert h.runner is not None
        result = await asyncio.wait_for(h.runner, 2)
        assert result.reason == "agent_hangup" and not result.cancelled
        assert len(h.frames(MarkPlayedFrame, DOWNSTREAM)) == 1


async def test_end_call_after_unmarked_audio_sends_its_own_mark() -> None:
    async with Harness(start=StartEvent(stream_sid=SID, call_sid=CALL)) as h:
        await settle()
        await h.task.queue_frame(OutputAudioFrame(audio=b"\x01" * 200, chunk_id="x"))
        await h.task.queue_frame(TTSStoppedFrame())
        await h.task.queue_frame(EndCallFrame())
        (mark,) = h.socket.events("mark")
        assert mark["mark"]["name"].startswith("nixflex:end-call:")
        assert len(h.socket.events("media")) == 2 and not h.task.done
        await h.feed(mark_echo(mark["mark"]["name"]))
        assert h.runner is not None
        result = await asyncio.wait_for(h.runner, 2)
        assert result.reason == "agent_hangup"
        assert h.frames(MarkPlayedFrame) == []  # internal marks are not reported


async def test_end_call_with_nothing_pending_passes_at_once() -> None:
    async with Harness(start=StartEvent(stream_sid=SID, call_sid=CALL)) as h:
        await settle()
        await h.task.queue_frame(EndCallFrame(reason="voicemail"))
        assert h.runner is not None
        result = await asyncio.wait_for(h.runner, 2)
        assert result.reason == "voicemail"


async def test_end_call_is_released_when_the_socket_goes() -> None:
    async with Harness(start=StartEvent(stream_sid=SID, call_sid=CALL)) as h:
        await settle()
        await h.task.queue_frame(OutputAudioFrame(audio=b"\x01" * 1600, chunk_id="a"))
        await h.task.queue_frame(MarkFrame(name="a"))
        await h.task.queue_frame(EndCallFrame())
        assert not h.task.done
        await h.feed(None)
        assert h.runner is not None
        result = await asyncio.wait_for(h.runner, 2)
        # The agent had decided to end the call: the held frame is released first.
        assert result.reason == "agent_hangup"


async def test_failed_send_is_handled_quietly() -> None:
    async with Harness(start=StartEvent(stream_sid=SID, call_sid=CALL)) as h:
        await settle()
        h.socket.fail_sends = True
        await h.task.queue_frame(OutputAudioFrame(audio=b"\x01" * 320, chunk_id="a"))
        await h.task.queue_frame(MarkFrame(name="a"))
        await h.task.queue_frame(InterruptionFrame())
        assert not h.transport.socket_open
        await h.task.queue_frame(OutputAudioFrame(audio=b"\x01" * 320, chunk_id="b"))
        assert h.transport.output().stats.dropped_bytes == 320
        await h.task.queue_frame(EndCallFrame())
        assert h.runner is not None
        result = await asyncio.wait_for(h.runner, 2)
        assert result.reason == "agent_hangup" and result.error is None


async def test_output_before_start_is_held_until_twilio_start() -> None:
    async with Harness() as h:
        await settle()
        await h.task.queue_frame(OutputAudioFrame(audio=b"\x01" * 160, chunk_id="hi"))
        await h.task.queue_frame(MarkFrame(name="hi"))
        assert h.socket.sent == []
        await h.feed(start_msg())
        assert [m["event"] for m in h.socket.sent] == ["media", "mark"]


async def test_a_trailing_partial_is_flushed_before_the_buffer_runs_dry() -> None:
    async with Harness(start=StartEvent(stream_sid=SID, call_sid=CALL)) as h:
        await settle()
        await h.task.queue_frame(OutputAudioFrame(audio=b"\x01" * 170, chunk_id="a"))
        assert len(h.socket.events("media")) == 1
        for _ in range(100):
            await asyncio.sleep(0.01)
            if len(h.socket.events("media")) == 2:
                break
        last = base64.b64decode(h.socket.events("media")[1]["media"]["payload"])
        assert last == b"\x01" * 10 + b"\xff" * 150
        stopped = h.frames(BotStoppedSpeakingFrame)
        for _ in range(100):
            if stopped:
                break
            await asyncio.sleep(0.01)
            stopped = h.frames(BotStoppedSpeakingFrame)
        assert len(stopped) == 1


def test_frame_size_constant() -> None:
    assert FRAME_BYTES == 160


class _SlowSink(FrameProcessor):
    """Spends ``cost_s`` of CPU on each caller audio frame, like a heavy chain would."""

    def __init__(self, cost_s: float) -> None:
        super().__init__(name="slow")
        self.cost_s = cost_s
        self.audio = 0

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, InputAudioFrame):
            time.sleep(self.cost_s)  # noqa: ASYNC251 -- CPU work between awaits, on purpose
            self.audio += 1
        await self.push_frame(frame, direction)


async def _counts_seen_while_draining(reader_slice_ms: float, frames: int = 40) -> list[int]:
    """Queue a backlog of ``frames`` media messages; return the audio counts another task
    sees while the reader works through it."""
    socket = MemorySocket()
    transport = TwilioMediaTransport(socket, reader_slice_ms=reader_slice_ms)
    sink = _SlowSink(0.001)
    task = PipelineTask(Pipeline([transport.input(), sink]), call_id="call-1")
    socket.inbox.put_nowait(start_msg())
    for i in range(frames):
        socket.inbox.put_nowait(media_msg(i + 2, i + 1))
    seen: list[int] = []

    async def other() -> None:
        while sink.audio < frames:
            seen.append(sink.audio)
            await asyncio.sleep(0)

    runner = asyncio.create_task(task.run())
    await asyncio.wait_for(other(), 10)
    await task.cancel()
    await asyncio.wait_for(runner, 5)
    return seen


async def test_reader_yields_to_other_tasks_while_it_drains_a_backlog() -> None:
    seen = await _counts_seen_while_draining(reader_slice_ms=2.0)
    # 1 ms per frame, a 2 ms slice: other tasks run every few frames, not after all 40.
    assert len([c for c in seen if 0 < c < 40]) >= 5


async def test_reader_without_a_slice_limit_drains_a_backlog_in_one_step() -> None:
    # What the slice prevents: with an unbounded slice the whole backlog runs in one step.
    seen = await _counts_seen_while_draining(reader_slice_ms=1e9)
    assert [c for c in seen if 0 < c < 40] == []


def test_reader_slice_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="reader_slice_ms"):
        TwilioMediaTransport(MemorySocket(), reader_slice_ms=-1)
