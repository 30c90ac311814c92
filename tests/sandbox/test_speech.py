"""Sandbox speech codec: round trips through mu-law, streaming, prefixes, VAD, no beeps."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
import webrtcvad
from hypothesis import given, settings
from hypothesis import strategies as st

from nixflex_engine.processors.codec import mulaw_to_pcm16_array, pcm16_array_to_mulaw
from nixflex_engine.sandbox import speech as sp

PRINTABLE = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), min_size=1)


def through_mulaw(x: npt.NDArray[np.int16]) -> bytes:
    return pcm16_array_to_mulaw(x)


@settings(max_examples=60, deadline=None)
@given(PRINTABLE.filter(lambda t: len(t) <= 40))
def test_printable_ascii_round_trips_through_mulaw(text: str) -> None:
    assert sp.decode_text(through_mulaw(sp.synthesize(text))) == text


@pytest.mark.parametrize("text", ["café — naïve", "日本語です", "emoji 🙂 ok", "tab\tand\nnewline"])
def test_any_unicode_round_trips(text: str) -> None:
    assert sp.decode_text(through_mulaw(sp.synthesize(text))) == text


@settings(max_examples=25, deadline=None)
@given(
    text=PRINTABLE.filter(lambda t: len(t) <= 30),
    cuts=st.lists(st.integers(min_value=1, max_value=700), min_size=1, max_size=60),
)
def test_streaming_decoder_is_independent_of_chunking(text: str, cuts: list[int]) -> None:
    audio = through_mulaw(np.concatenate([sp.synthesize(text), sp.silence(150)]))
    dec = sp.SpeechDecoder()
    events: list[sp.DecoderEvent] = []
    pos = 0
    i = 0
    while pos < len(audio):
        step = cuts[i % len(cuts)]
        events += dec.feed_mulaw(audio[pos : pos + step])
        pos += step
        i += 1
    events += dec.end()
    symbols = [e for e in events if isinstance(e, sp.SymbolDecoded)]
    assert bytes(s.byte for s in symbols).decode() == text
    kinds = [type(e) for e in events if not isinstance(e, sp.SymbolDecoded)]
    assert kinds == [sp.ActivityStarted, sp.ActivityEnded]
    ended = events[-1]
    assert isinstance(ended, sp.ActivityEnded) and not ended.truncated


def test_duration_is_75_ms_per_character_and_deterministic() -> None:
    text = "Hello, how are you today?"
    x = sp.synthesize(text)
    assert len(x) == len(text) * 600 == sp.duration_ms(text) * 8
    assert np.array_equal(x, sp.synthesize(text))
    assert len(sp.synthesize("")) == 0
    assert sp.decode(sp.synthesize("")) == []


def test_utterances_are_found_between_silence_and_noise_with_times() -> None:
    audio = np.concatenate(
        [
            sp.noise(400),
            sp.synthesize("Hello?"),
            sp.noise(700, seed=3),
            sp.cough(200),
            sp.silence(300),
            sp.synthesize("Yes, speaking.", pitch_hz=210),
            sp.silence(200),
        ]
    )
    utts = sp.decode(through_mulaw(audio))
    assert [u.text for u in utts] == ["Hello?", "Yes, speaking."]
    assert utts[0].start_s == pytest.approx(0.4, abs=0.011)
    assert utts[0].end_s == pytest.approx(0.4 + 0.45, abs=0.011)
    second_start = 0.4 + 0.45 + 0.7 + 0.2 + 0.3
    assert utts[1].start_s == pytest.approx(second_start, abs=0.011)
    assert not utts[1].truncated
    # The cough is sound, but no speech: visible only with include_noise, with no text.
    with_noise = sp.decode(through_mulaw(audio), include_noise=True)
    assert [u.text for u in with_noise] == ["Hello?", "", "Yes, speaking."]


def test_noise_cough_and_beep_decode_to_nothing() -> None:
    for audio in (sp.noise(2000, level_dbfs=-30), sp.cough(400), sp.tone(1000, 500)):
        assert sp.decode(through_mulaw(audio)) == []
        assert sp.decode(through_mulaw(audio), include_noise=True) != []


def test_prefix_gives_the_words_fully_heard() -> None:
    text = "Hello, this is Anna from Acme."
    audio = through_mulaw(sp.synthesize(text))
    per_char = 600
    assert sp.heard_words(audio, whole=True) == text.split()
    assert sp.heard_words(audio) == text.split()[:-1]  # might have been cut after "Acme."
    assert sp.heard_words(np.concatenate([sp.synthesize(text), sp.silence(100)])) == text.split()
    assert sp.heard_words(audio[: 5 * per_char]) == []  # "Hello" but not the comma
    assert sp.heard_words(audio[: 7 * per_char]) == ["Hello,"]  # the space after it heard
    cut = (len("Hello, this is An") * per_char) + 250
    assert sp.heard_words(audio[:cut]) == ["Hello,", "this", "is"]
    utt = sp.decode(audio[:cut])[0]
    assert utt.truncated and utt.text == "Hello, this is An"  # not the 2nd "n": 250/600


def test_decoder_can_start_mid_utterance() -> None:
    text = "resynchronises after a reconnect"
    audio = through_mulaw(sp.synthesize(text))
    for offset in (37, 600 * 3 + 290, 600 * 10 + 599):
        decoded = sp.decode_text(audio[offset:])
        assert text.endswith(decoded[1:])  # at most the cut symbol itself is lost
        assert len(decoded) >= len(text) - offset // 600 - 1


def test_flush_decodes_the_symbol_in_progress_once() -> None:
    audio = through_mulaw(np.concatenate([sp.synthesize("abcdef"), sp.silence(100)]))
    dec = sp.SpeechDecoder()
    first = dec.feed_mulaw(audio[: 600 * 3 + 400]) + dec.flush()
    got = bytes(e.byte for e in first if isinstance(e, sp.SymbolDecoded))
    assert got == b"abcd"  # "d" decoded early from 2/3 of its audio
    rest = dec.feed_mulaw(audio[600 * 3 + 400 :]) + dec.end()
    more = bytes(e.byte for e in rest if isinstance(e, sp.SymbolDecoded))
    assert got + more == b"abcdef"


def test_concatenated_utterances_without_a_gap_still_decode() -> None:
    # "abc" ends on an even symbol and "cde" starts on one: the runs merge and are split again.
    audio = np.concatenate([sp.synthesize("abc"), sp.synthesize("cde")])
    assert sp.decode_text(through_mulaw(audio)) == "abccde"


def speech_ratio(audio: npt.NDArray[np.int16], mode: int) -> float:
    vad = webrtcvad.Vad(mode)
    pcm = mulaw_to_pcm16_array(pcm16_array_to_mulaw(audio)).astype("<i2").tobytes()
    frames = [pcm[i : i + 320] for i in range(0, len(pcm) - 319, 320)]
    return sum(vad.is_speech(f, 8000) for f in frames) / len(frames)


@pytest.mark.parametrize("mode", [2, 3])
@pytest.mark.parametrize("pitch", [95.0, 125.0, 210.0])
def test_webrtcvad_hears_speech(mode: int, pitch: float) -> None:
    for text in ("Hello?", "Yes, I'd like to book a table for two at eight.", "aaaa   zzzz 0000"):
        assert speech_ratio(sp.synthesize(text, pitch_hz=pitch), mode) >= 0.9
    assert speech_ratio(sp.silence(500), mode) == 0.0


def tone_concentration(x: npt.NDArray[np.int16], window_ms: float = 150.0) -> float:
    """Worst, over every 150 ms window, share of energy within ±15 Hz of one 400-2000 Hz peak."""
    n = int(window_ms * 8)
    sig = x.astype(np.float64)
    freqs = np.fft.rfftfreq(8192, 1 / 8000)
    band = (freqs >= 400) & (freqs <= 2000)
    worst = 0.0
    for s in range(0, len(sig) - n + 1, 80):
        power = np.abs(np.fft.rfft(sig[s : s + n] * np.hanning(n), 8192)) ** 2
        peak = freqs[int(np.argmax(np.where(band, power, 0.0)))]
        worst = max(worst, float(power[np.abs(freqs - peak) <= 15].sum() / (power.sum() + 1e-9)))
    return worst


def test_a_beep_is_tonal_but_speech_never_is() -> None:
    assert tone_concentration(sp.tone(1000, 200)) > 0.9
    assert tone_concentration(np.concatenate([sp.synthesize("hi"), sp.tone(440, 160)])) > 0.9
    for text in ("aaaaaaaaaaaa", "llllllll", "          ", "!!!!!!!!", "Hello there."):
        for pitch in (95.0, 125.0, 210.0):
            assert tone_concentration(sp.synthesize(text, pitch_hz=pitch)) < 0.3


def test_no_tone_is_held_longer_than_one_symbol() -> None:
    # Repeated characters alternate between the two tone sets.
    a = sp.synthesize("aa")
    first = np.abs(np.fft.rfft(a[100:500].astype(float)))
    second = np.abs(np.fft.rfft(a[700:1100].astype(float)))
    freqs = np.fft.rfftfreq(400, 1 / 8000)
    hi = freqs > 850
    peaks_1 = set(freqs[hi][np.argsort(first[hi])[-4:]])
    peaks_2 = set(freqs[hi][np.argsort(second[hi])[-4:]])
    assert peaks_1.isdisjoint(peaks_2)


def test_the_engine_beep_detector_ignores_sandbox_speech() -> None:
    from nixflex_engine.processors.beep import BeepDetector

    def beeps(audio: npt.NDArray[np.int16]) -> int:
        det = BeepDetector()
        pcm = mulaw_to_pcm16_array(pcm16_array_to_mulaw(audio))
        return len(det.process(pcm) + det.flush())

    assert beeps(np.concatenate([sp.synthesize("Leave a message after the"), sp.tone(1000, 300)]))
    for text in ("aaaaaaaaaaaa", "oooooooo", "Hello? Hello!!! Who is this?", "1111111111"):
        for pitch in (95.0, 125.0, 210.0, 250.0):
            assert beeps(sp.synthesize(text, pitch_hz=pitch)) == 0


@pytest.mark.parametrize("amplitude", [0.1, 0.3, 1.0])
def test_levels_from_quiet_to_full_scale_decode(amplitude: float) -> None:
    text = "Levels, levels: 0.1 to 1.0!"
    audio = np.concatenate([sp.synthesize(text, amplitude=amplitude), sp.noise(200)])
    [utt] = sp.decode(through_mulaw(audio))
    assert utt.text == text and not utt.truncated
    assert utt.start_s == 0.0 and utt.end_s == pytest.approx(sp.duration_ms(text) / 1000, abs=0.011)


@settings(max_examples=40, deadline=None)
@given(
    text=PRINTABLE.filter(lambda t: len(t) <= 30),
    pitch=st.floats(min_value=85, max_value=270),
    amplitude=st.floats(min_value=0.1, max_value=1.0),
    noise_dbfs=st.floats(min_value=-70, max_value=-45),
)
def test_round_trip_at_any_voice_level_and_noise_floor(
    text: str, pitch: float, amplitude: float, noise_dbfs: float
) -> None:
    voice = sp.synthesize(text, pitch_hz=pitch, amplitude=amplitude).astype(np.int32)
    line = np.concatenate([np.zeros(800, np.int32), voice, np.zeros(800, np.int32)])
    line += sp.noise(len(line) / 8, level_dbfs=noise_dbfs)[: len(line)]
    audio = np.clip(line, -32768, 32767).astype(np.int16)
    assert sp.decode_text(through_mulaw(audio)) == text
