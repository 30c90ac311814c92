"""Sandbox speech: a deterministic text ⇄ speech-like-audio codec for the fakes.

Every party in the sandbox "talks" in this codec, so every fake stays stateless: the sandbox
callee speaks text as audio, the fake Deepgram STT transcribes by *decoding* the audio it
receives, the fake Deepgram TTS renders the agent's text as audio, and the callee decodes what it
actually heard (a prefix, when a barge-in cut the playback short). Pure functions and one
incremental decoder class; no I/O, no event loop, no global mutable state.

Encoding (8 kHz, int16)
-----------------------
* Text is UTF-8 encoded; each **byte** is one *symbol* of :data:`SYMBOL_MS` = 75 ms (600
  samples), i.e. ≈ 13 characters/s ≈ 150 words/min, so durations, latencies and barge-in
  figures come out realistic. Printable ASCII round-trips exactly; other characters cost 2-4
  symbols each.
* Data: a byte ``b`` is split into four 2-bit digits ``d0..d3`` (most significant first). Digit
  ``g`` selects one of 4 tones in group ``g``, so every symbol is a *chord* of 4 simultaneous
  tones (multiple-frequency-shift keying, phase-continuous). Tone frequencies are
  ``900 + 75·(8·g + 2·d + p)`` Hz (900-3225 Hz), all on the 25 Hz grid of the decoder's
  40 ms analysis window, 75 Hz apart.
* ``p`` is the symbol's **parity** (index mod 2 within the utterance): even and odd symbols use
  disjoint, interleaved tone sets. The decoder therefore finds symbol boundaries by itself
  (a change of parity), needs no alignment and can start mid-utterance (e.g. audio replayed
  after a socket reconnect); and no tone is ever held longer than one symbol (75 ms), even for
  repeated characters, so the speech never looks like a voicemail beep (a steady tone
  ≥ 150 ms).
* Voice: the chord is mixed with a voiced carrier: a harmonic series (1/k amplitudes, rolled off
  between 500 and 800 Hz) on a gliding pitch contour around ``pitch_hz`` (intonation, so no
  harmonic is steady either), and the sum is amplitude-modulated at syllable rate (≈ 4 Hz,
  never below 65 % so no frame inside an utterance is silent). webrtcvad classifies it as
  speech on essentially every 20 ms frame in modes 0-3 (the tests require ≥ 90 % in modes 2, 3).
* Utterances are separated by silence: anything quieter than ``silence_dbfs`` (-40 dBFS RMS
  per 10 ms hop) for ``min_gap_ms`` ends an utterance. Speech is ≈ -22 dBFS RMS by default;
  :func:`noise` defaults to -55 dBFS, so a noisy line still segments correctly.

Decoding
--------
:class:`SpeechDecoder` consumes samples (or mu-law bytes) in chunks of any size; every 10 ms it
analyses the last 40 ms with a Hann-windowed FFT, classifies the window by parity (the set whose
4 strongest per-group tones carry the energy, and only if those 4 bins hold a clear share of the
900-3300 Hz band, which rejects noise, coughs and beeps), groups consecutive windows of one
parity into a symbol, and decodes each digit as the strongest of its 4 tones summed over the
symbol's windows. It emits :class:`ActivityStarted`, :class:`SymbolDecoded` and
:class:`ActivityEnded` events with sample positions. A symbol is emitted ≈ 40 ms after it ends
(when the next one starts), so transcripts grow character by character as audio arrives.
:func:`decode` / :func:`decode_text` decode a whole buffer; :func:`heard_words` gives the
words fully heard in a (possibly truncated) prefix.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from nixflex_engine.processors.codec import mulaw_to_pcm16_array, pcm16_array_to_mulaw

__all__ = [
    "HOP_SAMPLES",
    "SAMPLE_RATE",
    "SYMBOL_MS",
    "SYMBOL_SAMPLES",
    "ActivityEnded",
    "ActivityStarted",
    "DecoderEvent",
    "SpeechDecoder",
    "SymbolDecoded",
    "Utterance",
    "cough",
    "decode",
    "decode_text",
    "duration_ms",
    "heard_words",
    "noise",
    "silence",
    "synthesize",
    "synthesize_mulaw",
    "tone",
]

SAMPLE_RATE = 8000
SYMBOL_MS = 75
SYMBOL_SAMPLES = SAMPLE_RATE * SYMBOL_MS // 1000  # 600
HOP_SAMPLES = 80  # 10 ms analysis hop
WINDOW_SAMPLES = 320  # 40 ms analysis window → 25 Hz bins

_BASE_HZ = 900
_SPACING_HZ = 75
_BIN_HZ = SAMPLE_RATE / WINDOW_SAMPLES  # 25.0
_GROUPS = 4
_CHOICES = 4
# _TONE_HZ[g, d, p]
_TONE_HZ = np.array(
    [
        [[_BASE_HZ + _SPACING_HZ * (8 * g + 2 * d + p) for p in range(2)] for d in range(_CHOICES)]
        for g in range(_GROUPS)
    ],
    dtype=np.float64,
)
_TONE_BIN = (_TONE_HZ / _BIN_HZ).astype(np.int64)
_TONE_BIN_FLAT = _TONE_BIN.reshape(-1)
_BAND = (int(850 / _BIN_HZ), int(3300 / _BIN_HZ) + 1)
_HANN = np.hanning(WINDOW_SAMPLES + 2)[1:-1]
for _table in (_TONE_HZ, _TONE_BIN, _TONE_BIN_FLAT, _HANN):
    _table.setflags(write=False)  # constants, not state
_MIN_RUN_WINDOWS = 3
_SHARE_MIN = 0.25  # share of band energy held by the 4 selected bins, per window
_PARITY_MIN = 0.5  # share of all 32 tone bins held by the 4 selected bins
_FULL_SCALE = 32768.0
_WINDOWS_PER_SYMBOL = 6.3  # energy-weighted windows per symbol (measured)

_CARRIER_MIX = 0.55
_DATA_MIX = 0.45


def duration_ms(text: str) -> float:
    """How long :func:`synthesize` speaks ``text`` for, in ms."""
    return float(len(text.encode("utf-8")) * SYMBOL_MS)


def _pitch_contour(n: int, pitch_hz: float, rate: int) -> npt.NDArray[np.float64]:
    t = np.arange(n, dtype=np.float64) / rate
    return (
        pitch_hz
        + 0.18 * pitch_hz * np.sin(2 * np.pi * t / 0.41)
        + 0.10 * pitch_hz * np.sin(2 * np.pi * t / 0.17 + 1.0)
        - 0.08 * pitch_hz * np.minimum(t / 3.0, 1.0)  # slight declination
    )


def synthesize(
    text: str,
    *,
    pitch_hz: float = 125.0,
    amplitude: float = 0.3,
    sample_rate: int = SAMPLE_RATE,
) -> npt.NDArray[np.int16]:
    """Speak ``text``: int16 samples, :data:`SYMBOL_MS` per UTF-8 byte, at 8 kHz by default.

    ``pitch_hz`` sets the voice (the decoder ignores it); ``amplitude`` is the peak level as a
    fraction of full scale. Its quietest 10 ms is about -25 dBFS at the default 0.3 and
    -35 dBFS at 0.1; below 0.1 it dips under the decoder's default ``silence_dbfs`` (-40), so
    keep ``amplitude`` ≥ 0.1 for audio that must be transcribed (quieter is fine for VAD tests).
    ``sample_rate`` (≥ 8000) renders the same signal at another rate, e.g. for a TTS client that
    asks for 24 kHz; the decoder reads 8 kHz, so resample back (any decent resampler keeps the
    900-3225 Hz tones). Deterministic: the same arguments always give the same samples.
    """
    if sample_rate < SAMPLE_RATE:
        raise ValueError(f"sample_rate must be at least {SAMPLE_RATE} Hz")
    rate = int(sample_rate)
    data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    per_symbol = rate * SYMBOL_MS / 1000
    n = round(len(data) * per_symbol)
    if n == 0:
        return np.zeros(0, dtype=np.int16)
    t = np.arange(n, dtype=np.float64) / rate
    index = np.minimum((np.arange(n) // per_symbol).astype(np.int64), len(data) - 1)

    f0 = _pitch_contour(n, pitch_hz, rate)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    carrier = np.zeros(n)
    for k in range(1, 12):
        fk = k * f0
        gain = np.clip((800.0 - fk) / 300.0, 0.0, 1.0) / k
        if np.any(gain > 0):
            carrier += gain * np.sin(k * phase + 0.3 * k)
    carrier /= max(float(np.max(np.abs(carrier))), 1e-9)

    parity = (np.arange(len(data)) % 2)[index]
    chord = np.zeros(n)
    for g in range(_GROUPS):
        digit = ((data.astype(np.int64) >> (2 * (_GROUPS - 1 - g))) & 3)[index]
        freq = _TONE_HZ[g, digit, parity]
        tone_phase = 2 * np.pi * np.cumsum(freq) / rate + 0.7 * g
        chord += (1.0 - 0.12 * g) * np.sin(tone_phase)
    chord /= _GROUPS

    envelope = 0.65 + 0.35 * np.sin(np.pi * t / 0.23) ** 2
    x = envelope * (_CARRIER_MIX * carrier + _DATA_MIX * chord)
    ramp = min(rate // 500, n // 2)  # 2 ms raised-cosine attack and release, no clicks
    if ramp:
        r = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
        x[:ramp] *= r
        x[-ramp:] *= r[::-1]
    return np.asarray(np.clip(np.round(x * amplitude * _FULL_SCALE), -32768, 32767), dtype=np.int16)


def synthesize_mulaw(text: str, *, pitch_hz: float = 125.0, amplitude: float = 0.3) -> bytes:
    """:func:`synthesize` encoded as mu-law bytes (what Twilio and Deepgram carry)."""
    return pcm16_array_to_mulaw(synthesize(text, pitch_hz=pitch_hz, amplitude=amplitude))


def _samples(ms: float) -> int:
    return max(0, round(ms * SAMPLE_RATE / 1000))


def silence(ms: float) -> npt.NDArray[np.int16]:
    """``ms`` of digital silence."""
    return np.zeros(_samples(ms), dtype=np.int16)


def noise(ms: float, *, level_dbfs: float = -55.0, seed: int = 0) -> npt.NDArray[np.int16]:
    """``ms`` of white background noise at ``level_dbfs`` RMS (below the silence threshold by
    default, so it never starts an utterance)."""
    rng = np.random.default_rng(seed)
    rms = _FULL_SCALE * 10 ** (level_dbfs / 20)
    x = rng.standard_normal(_samples(ms)) * rms
    return np.asarray(np.clip(np.round(x), -32768, 32767), dtype=np.int16)


def cough(ms: float = 250.0, *, level_dbfs: float = -18.0, seed: int = 1) -> npt.NDArray[np.int16]:
    """A cough-like burst: loud, broadband, fast attack and decay. It is *activity* (a VAD may
    well call it speech) but carries no symbols, so it decodes to no text."""
    n = _samples(ms)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n)
    x = np.convolve(x, np.ones(3) / 3, mode="same")  # a little low-pass colouring
    t = np.arange(n) / max(n, 1)
    env = np.minimum(t / 0.08, 1.0) * np.exp(-3.0 * t)
    x *= env
    rms = float(np.sqrt(np.mean(x**2))) if n else 1.0
    x *= _FULL_SCALE * 10 ** (level_dbfs / 20) / max(rms, 1e-9)
    return np.asarray(np.clip(np.round(x), -32768, 32767), dtype=np.int16)


def tone(hz: float, ms: float, *, level_dbfs: float = -12.0) -> npt.NDArray[np.int16]:
    """A steady sine tone (e.g. a voicemail beep: 1000 Hz for 400 ms)."""
    n = _samples(ms)
    amp = _FULL_SCALE * 10 ** (level_dbfs / 20) * np.sqrt(2)
    x = amp * np.sin(2 * np.pi * hz * np.arange(n) / SAMPLE_RATE)
    return np.asarray(np.clip(np.round(x), -32768, 32767), dtype=np.int16)


# --------------------------------------------------------------------------- decoding


@dataclass(frozen=True, slots=True)
class ActivityStarted:
    """Sound above the silence threshold began at sample ``at``."""

    at: int


@dataclass(frozen=True, slots=True)
class SymbolDecoded:
    """One symbol (a UTF-8 byte) spanning samples ``[start, end)`` (estimated to ±20 ms)."""

    byte: int
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class ActivityEnded:
    """Sound ended at sample ``at``; ``truncated`` if the stream ended instead of silence."""

    at: int
    truncated: bool = False


DecoderEvent = ActivityStarted | SymbolDecoded | ActivityEnded


@dataclass(slots=True)
class _Window:
    start: int
    parity: int
    energy: npt.NDArray[np.float64]  # (groups, choices) energies of that parity's tones
    strength: float  # energy of its strongest tone per group, summed


@dataclass(slots=True)
class _Analysis:
    """Per hop (vectorised over a chunk): the 10 ms hop's RMS, and the classification of the
    40 ms window ending with it."""

    rms: list[float]
    valid: list[bool]  # holds a clear chord of one parity
    parity: list[int]
    chosen: npt.NDArray[np.float64]  # (hops, groups, choices) tone energies of that parity
    strength: list[float]


def _analyse(signal: npt.NDArray[np.float64], hops: int, band_floor: float) -> _Analysis:
    """``signal`` is the 240 samples before the first hop, then the hops."""
    signal = np.ascontiguousarray(signal)
    step = signal.strides[0]
    frames = np.lib.stride_tricks.as_strided(
        signal, shape=(hops, WINDOW_SAMPLES), strides=(HOP_SAMPLES * step, step), writeable=False
    )
    hop_power = np.square(signal[WINDOW_SAMPLES - HOP_SAMPLES :]).reshape(hops, HOP_SAMPLES)
    rms = np.sqrt(hop_power.sum(axis=1) / HOP_SAMPLES)
    spectrum = np.fft.rfft(frames * _HANN, axis=1)
    power = spectrum.real**2 + spectrum.imag**2
    band = power[:, _BAND[0] : _BAND[1]].sum(axis=1)
    tones = power[:, _TONE_BIN_FLAT].reshape(hops, _GROUPS, _CHOICES, 2)
    per_parity = tones.max(axis=2).sum(axis=1)  # (hops, p)
    parity = per_parity.argmax(axis=1)
    rows = np.arange(hops)
    selected = per_parity[rows, parity]
    total = tones.sum(axis=(1, 2, 3))
    valid = (
        (band > band_floor) & (selected >= _SHARE_MIN * band) & (selected >= _PARITY_MIN * total)
    )
    chosen = tones[rows, :, :, parity]  # (hops, g, d)
    return _Analysis(rms.tolist(), valid.tolist(), parity.tolist(), chosen, selected.tolist())


class SpeechDecoder:
    """Incremental sandbox-speech decoder: feed audio in chunks of any size, get events.

    ``min_gap_ms`` of silence ends an activity; ``silence_dbfs`` is the RMS level (per 10 ms)
    under which audio counts as silence.
    """

    __slots__ = (
        "_activity_start",
        "_band_floor",
        "_consumed_parity",
        "_gap",
        "_in_activity",
        "_last_active_end",
        "_pending",
        "_position",
        "_run",
        "_silent_samples",
        "_tail",
        "_threshold",
    )

    def __init__(self, *, min_gap_ms: float = 60.0, silence_dbfs: float = -40.0) -> None:
        self._gap = _samples(min_gap_ms)
        self._threshold = _FULL_SCALE * 10 ** (silence_dbfs / 20)
        # A tone at half the silence RMS has Hann-FFT power ≈ (A·N/4)²; require ~that much.
        self._band_floor = (self._threshold * 0.5 * WINDOW_SAMPLES / 4) ** 2
        self._pending = np.zeros(0, dtype=np.float64)
        self._tail = np.zeros(WINDOW_SAMPLES, dtype=np.float64)
        self._position = 0  # samples analysed (a multiple of HOP_SAMPLES)
        self._in_activity = False
        self._activity_start = 0
        self._last_active_end = 0
        self._silent_samples = 0
        self._run: list[_Window] = []
        self._consumed_parity: int | None = None

    @property
    def position(self) -> int:
        """Samples fed so far (analysed or buffered)."""
        return self._position + len(self._pending)

    @property
    def in_activity(self) -> bool:
        return self._in_activity

    @property
    def last_active_end(self) -> int:
        """Sample position where the most recent sound ended (or is, if still going)."""
        return self._last_active_end

    def feed_mulaw(self, data: bytes) -> list[DecoderEvent]:
        """Feed mu-law bytes (one sample per byte)."""
        return self.feed(mulaw_to_pcm16_array(data))

    def feed(self, samples: npt.NDArray[np.int16]) -> list[DecoderEvent]:
        """Feed int16 samples; returns the events they completed, in order."""
        events: list[DecoderEvent] = []
        self._pending = np.concatenate([self._pending, np.asarray(samples, dtype=np.float64)])
        hops = len(self._pending) // HOP_SAMPLES
        if hops == 0:
            return events
        usable = self._pending[: hops * HOP_SAMPLES]
        a = _analyse(np.concatenate([self._tail[HOP_SAMPLES:], usable]), hops, self._band_floor)
        for i in range(hops):
            self._hop(a.rms[i], a.valid[i], a.parity[i], a.chosen[i], a.strength[i], events)
        self._tail = np.concatenate([self._tail, usable])[-WINDOW_SAMPLES:]
        self._pending = self._pending[hops * HOP_SAMPLES :]
        return events

    def flush(self) -> list[DecoderEvent]:
        """Decode the symbol in progress now (for a Finalize, or at the end of a stream).

        The activity stays open; the rest of a symbol cut by the flush is not decoded twice.
        """
        events: list[DecoderEvent] = []
        if self._pending.size:
            # Analyse the partial hop padded with silence, without consuming it.
            hop = np.concatenate([self._pending, np.zeros(HOP_SAMPLES - len(self._pending))])
            a = _analyse(np.concatenate([self._tail[HOP_SAMPLES:], hop]), 1, self._band_floor)
            end = self._position + HOP_SAMPLES
            self._window(end, a.valid[0], a.parity[0], a.chosen[0], a.strength[0], events)
        if self._run:
            self._consumed_parity = self._run[-1].parity
            self._close_run(events)
        return events

    def end(self) -> list[DecoderEvent]:
        """End of stream: :meth:`flush`, then close an open activity as truncated."""
        events = self.flush()
        if self._in_activity:
            self._in_activity = False
            events.append(ActivityEnded(self._last_active_end, truncated=True))
        return events

    # -- internals

    def _hop(
        self,
        rms: float,
        valid: bool,
        parity: int,
        chosen: npt.NDArray[np.float64],
        strength: float,
        events: list[DecoderEvent],
    ) -> None:
        start = self._position
        self._position += HOP_SAMPLES
        active = rms >= self._threshold
        if active:
            if not self._in_activity:
                self._in_activity = True
                self._activity_start = start
                events.append(ActivityStarted(start))
            self._last_active_end = start + HOP_SAMPLES
            self._silent_samples = 0
        if not self._window(self._position, valid, parity, chosen, strength, events):
            self._consumed_parity = None
        if not active and self._in_activity:
            self._silent_samples += HOP_SAMPLES
            if self._silent_samples >= self._gap:
                if self._run:
                    self._close_run(events)
                self._in_activity = False
                self._consumed_parity = None
                events.append(ActivityEnded(self._last_active_end))

    def _window(
        self,
        end: int,
        valid: bool,
        parity: int,
        chosen: npt.NDArray[np.float64],
        strength: float,
        events: list[DecoderEvent],
    ) -> bool:
        """Take the window ending at sample ``end``; False if it holds no symbol."""
        if not (valid and self._in_activity):
            if self._run:
                self._close_run(events)
            return False
        if self._consumed_parity is not None:
            if parity == self._consumed_parity:
                return True  # the rest of a symbol already decoded by flush()
            self._consumed_parity = None
        if self._run and self._run[-1].parity != parity:
            self._close_run(events)
        self._run.append(_Window(end - WINDOW_SAMPLES, parity, chosen, strength))
        return True

    def _close_run(self, events: list[DecoderEvent]) -> None:
        run, self._run = self._run, []
        if len(run) < _MIN_RUN_WINDOWS:
            return
        # Two symbols of one parity back to back (e.g. two utterances concatenated with no gap)
        # form one long run; split it by its energy-weighted length (≈ 6.3 windows a symbol).
        strengths = sorted(w.strength for w in run)
        mid = len(strengths) // 2
        median = max((strengths[mid] + strengths[(len(strengths) - 1) // 2]) / 2, 1e-12)
        weight = sum(min(x / median, 1.0) for x in strengths)
        count = max(1, round(weight / _WINDOWS_PER_SYMBOL))
        first = run[0].start + WINDOW_SAMPLES // 2 - HOP_SAMPLES // 2
        last = run[-1].start + WINDOW_SAMPLES // 2 + HOP_SAMPLES // 2
        first = max(first, self._activity_start)
        if not self._in_activity or self._silent_samples:
            last = min(last, self._last_active_end)
        last = max(last, first + 1)
        span = (last - first) / count
        for i in range(count):
            part = run[round(i * len(run) / count) : round((i + 1) * len(run) / count)]
            if not part:
                continue
            energy = part[0].energy
            for w in part[1:]:
                energy = energy + w.energy  # (g, d)
            best = energy.max(axis=1)
            if float(best.sum()) < _PARITY_MIN * float(energy.sum()):
                continue
            digits = energy.argmax(axis=1).tolist()
            byte = 0
            for d in digits:
                byte = (byte << 2) | int(d)
            events.append(
                SymbolDecoded(byte, round(first + i * span), round(first + (i + 1) * span))
            )


# --------------------------------------------------------------------------- helpers


@dataclass(slots=True)
class Utterance:
    """One stretch of sound and the text decoded from it (times in seconds)."""

    text: str
    start_s: float
    end_s: float
    truncated: bool = False
    symbols: list[SymbolDecoded] = field(default_factory=list)


def _as_samples(audio: npt.NDArray[np.int16] | bytes) -> npt.NDArray[np.int16]:
    if isinstance(audio, bytes | bytearray | memoryview):
        return mulaw_to_pcm16_array(bytes(audio))
    return np.asarray(audio, dtype=np.int16)


def _text(symbols: Iterable[SymbolDecoded], *, final: bool) -> str:
    dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
    return dec.decode(bytes(s.byte for s in symbols), final=final)


def decode(
    audio: npt.NDArray[np.int16] | bytes,
    *,
    min_gap_ms: float = 60.0,
    include_noise: bool = False,
) -> list[Utterance]:
    """Decode a whole buffer (int16 samples, or mu-law ``bytes``) into utterances.

    Stretches of sound with no decodable symbol (noise, a cough, a beep) are left out unless
    ``include_noise``. The last utterance is ``truncated`` if the audio stops mid-sound.
    """
    samples = _as_samples(audio)
    dec = SpeechDecoder(min_gap_ms=min_gap_ms)
    events = dec.feed(samples) + dec.end()
    out: list[Utterance] = []
    current: Utterance | None = None
    for ev in events:
        if isinstance(ev, ActivityStarted):
            current = Utterance("", ev.at / SAMPLE_RATE, ev.at / SAMPLE_RATE)
        elif isinstance(ev, SymbolDecoded):
            if current is None:  # pragma: no cover - symbols only arrive inside an activity
                current = Utterance("", ev.start / SAMPLE_RATE, ev.end / SAMPLE_RATE)
            current.symbols.append(ev)
        elif current is not None:
            current.end_s = ev.at / SAMPLE_RATE
            current.truncated = ev.truncated
            if ev.truncated and current.symbols:
                last = current.symbols[-1]
                if len(samples) - last.start < SYMBOL_SAMPLES - HOP_SAMPLES:
                    current.symbols.pop()  # cut mid-symbol: that character was not heard
            current.text = _text(current.symbols, final=not ev.truncated)
            if current.symbols or include_noise:
                out.append(current)
            current = None
    return out


def decode_text(audio: npt.NDArray[np.int16] | bytes, *, min_gap_ms: float = 60.0) -> str:
    """All the text in ``audio``, utterances joined by one space."""
    return " ".join(u.text for u in decode(audio, min_gap_ms=min_gap_ms))


def heard_words(audio: npt.NDArray[np.int16] | bytes, *, whole: bool = False) -> list[str]:
    """The words fully heard in ``audio``, which may have been cut short (a barge-in).

    Audio that ends mid-sound is taken as cut: its last word counts only if the space after it
    was heard, since "Hell" cannot be told from a cut "Hello". Pass ``whole=True`` when the
    audio is known to be complete (playback finished), so a final word counts anyway.
    """
    words: list[str] = []
    utts = decode(audio)
    for i, utt in enumerate(utts):
        parts = utt.text.split(" ")
        if utt.truncated and not whole and i == len(utts) - 1:
            parts = parts[:-1]
        words.extend(w for p in parts for w in p.split() if w)
    return words
