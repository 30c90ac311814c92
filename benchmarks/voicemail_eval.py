"""Replay the labelled voicemail set through each detector alone and through the arbiter.

    .venv/bin/python benchmarks/voicemail_eval.py            # full set, dev and held-out
    .venv/bin/python benchmarks/voicemail_eval.py --json     # machine-readable
    .venv/bin/python benchmarks/voicemail_eval.py --errors dev   # misclassified dev cases

Each case in ``tests/data/voicemail_cases.jsonl`` is a timeline (ms from pickup) of the
callee's utterances, an optional beep and Twilio's AMD callback. The replay turns it into
what the engine would receive, with the latencies of the real chain:

* **audio** — synthesized PCM16 at 8 kHz, through the mu-law codec like Twilio's: every
  utterance becomes speech-like audio (a harmonic voice with a moving pitch, formant-shaped
  vowels, noise consonants, syllable-rate envelope), the beep a tone with soft edges, and
  line noise runs underneath. The beep detector hears this audio, never the labels.
* **VAD** — speech start 60 ms after it begins; speech stop ``VAD_STOP_MS`` after it ends
  (pauses shorter than that do not stop speech), like webrtcvad with a hang-over.
* **STT** — an interim transcript every 400 ms of speech with the words said so far (words
  spread evenly over the utterance), arriving 250 ms later; the final 400 ms after the
  utterance ends (endpointing + network).
* **AMD** — the callback at the case's ``at_ms``.
* **time** — a tick every 20 ms (one Twilio media frame).

Detectors are scored alone — transcript (first confident verdict of the classifier; nothing
decided = a person, as the call then carries on), beep (a beep heard = machine), AMD
(``machine_*`` = machine, ``human`` = person, ``unknown``/``fax`` = a person) — and combined
(:class:`VoicemailArbiter`, ``voicemail_action=hangup``: its final state, so a late
machine verdict that overrides a person counts). Reported: accuracy, false-machine rate
(people classed as machines — hung up on), missed machines, median/p95 time to a machine
verdict after pickup, and for people: time from the end of their first words to the moment
the opener is allowed. A second pass with ``leave_message`` checks when the message starts
relative to the beep.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from nixflex_engine.processors.beep import BeepDetector, BeepEvent
from nixflex_engine.processors.codec import mulaw_to_pcm16_array, pcm16_array_to_mulaw
from nixflex_engine.processors.voicemail_rules import (
    Action,
    AllowOpener,
    ArbiterSettings,
    EndCall,
    StartVoicemailMessage,
    TranscriptClassifier,
    VoicemailAction,
    VoicemailArbiter,
    VoicemailDetected,
)

CASES = Path(__file__).resolve().parent.parent / "tests" / "data" / "voicemail_cases.jsonl"
SR = 8000
FRAME_MS = 20
TAIL_MS = 4000
MAX_MS = 40000
SHORT_GREETING_MS = 1600  # "Hello?"-like: all speech before the opener lasted this or less

Case = dict[str, Any]


@dataclass(frozen=True, slots=True)
class ReplayConfig:
    """Latencies of the chain the replay assumes (ms)."""

    vad_start_ms: int = 60
    vad_stop_ms: int = 250
    interim_every_ms: int = 400
    stt_latency_ms: int = 250
    final_latency_ms: int = 400


DEFAULT_REPLAY = ReplayConfig()


# ================================================================================ audio


def _formant_gains(
    f0: float, n: int, formants: tuple[float, ...], rng: np.random.Generator
) -> npt.NDArray[np.float64]:
    k = np.arange(1, n + 1, dtype=np.float64)
    freqs = k * f0
    gains = np.zeros(n)
    for i, f in enumerate(formants):
        bw = 70.0 + 40.0 * i + rng.uniform(0, 40)
        gains += (1.0 / (i + 1)) / (1.0 + ((freqs - f) / bw) ** 2)
    return np.asarray(gains / np.sqrt(k) + 0.02 / k, dtype=np.float64)


_VOWELS = (
    (730.0, 1090.0, 2440.0),  # a
    (530.0, 1840.0, 2480.0),  # e
    (270.0, 2290.0, 3010.0),  # i
    (570.0, 840.0, 2410.0),  # o
    (300.0, 870.0, 2240.0),  # u
    (660.0, 1720.0, 2410.0),  # ae
    (490.0, 1350.0, 1690.0),  # er
)


def synth_speech(duration_ms: int, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """Speech-like audio: voiced syllables with moving pitch and formants, noisy consonants."""
    n_total = int(SR * duration_ms / 1000)
    out = np.zeros(n_total)
    base_f0 = rng.uniform(95, 235)
    pos = 0
    phase = 0.0
    while pos < n_total:
        syl = min(int(SR * rng.uniform(0.12, 0.32)), n_total - pos)
        if syl <= 0:
            break
        t = np.arange(syl)
        # Consonant: a burst of shaped noise at the start of most syllables.
        cons = int(syl * rng.uniform(0.15, 0.4)) if rng.random() < 0.75 else 0
        if cons:
            noise = rng.normal(0, 1, cons)
            if rng.random() < 0.5:
                noise = np.diff(noise, prepend=0.0)  # fricative: high-passed
            env = np.hanning(cons) if cons > 2 else np.ones(cons)
            out[pos : pos + cons] += 0.25 * noise * env
        voiced = syl - cons
        if voiced > 8:
            f_start = base_f0 * rng.uniform(0.85, 1.2)
            f_end = f_start * rng.uniform(0.8, 1.25)
            f0 = np.linspace(f_start, f_end, voiced) * (
                1.0 + 0.01 * np.sin(2 * np.pi * rng.uniform(4, 7) * t[:voiced] / SR)
            )
            ph = phase + np.cumsum(2 * np.pi * f0 / SR)
            phase = float(ph[-1])
            formants = tuple(f * rng.uniform(0.9, 1.1) for f in _VOWELS[rng.integers(len(_VOWELS))])
            n_h = int(3600 / max(f_start, f_end))
            gains = _formant_gains(float(np.mean(f0)), n_h, formants, rng)
            sig = gains @ np.sin(np.outer(np.arange(1, n_h + 1), ph))
            sig /= max(np.sqrt(np.mean(sig**2)), 1e-9)
            env = np.hanning(voiced + 2)[1:-1] ** 0.5
            out[pos + cons : pos + syl] += sig * env + 0.05 * rng.normal(0, 1, voiced)
        pos += syl
    return out


def synth_case_audio(case: Case, horizon_ms: int) -> npt.NDArray[np.int16]:
    """The callee side of the call as Twilio would deliver it (mu-law round trip)."""
    rng = np.random.default_rng(zlib.crc32(case["id"].encode()))
    n = int(SR * horizon_ms / 1000)
    noise_dbfs = rng.uniform(-62, -45)
    audio = rng.normal(0, 32768 * 10 ** (noise_dbfs / 20), n)
    speech_dbfs = rng.uniform(-24, -14)
    for ev in case["events"]:
        if ev["type"] == "utterance":
            s = int(SR * ev["start_ms"] / 1000)
            sig = synth_speech(ev["end_ms"] - ev["start_ms"], rng)
            e = min(n, s + sig.size)
            if e > s:
                audio[s:e] += sig[: e - s] * 32768 * 10 ** (speech_dbfs / 20)
        elif ev["type"] == "beep":
            s = int(SR * ev["start_ms"] / 1000)
            m = int(SR * ev["duration_ms"] / 1000)
            t = np.arange(m) / SR
            tone = np.sin(2 * np.pi * ev["frequency_hz"] * t + rng.uniform(0, 6.28))
            ramp = min(40, m // 4)
            env = np.ones(m)
            env[:ramp] = np.linspace(0, 1, ramp)
            env[-ramp:] = np.linspace(1, 0, ramp)
            e = min(n, s + m)
            if e > s:
                level = 32768 * 10 ** (rng.uniform(-16, -6) / 20)
                audio[s:e] += (tone * env * level)[: e - s]
    pcm = np.clip(audio, -32768, 32767).astype(np.int16)
    return mulaw_to_pcm16_array(pcm16_array_to_mulaw(pcm))


# ================================================================================ replay


@dataclass(order=True, slots=True)
class Ev:
    at_ms: float
    order: int
    kind: str = field(compare=False)
    data: dict[str, Any] = field(compare=False, default_factory=dict)


def utterances(case: Case) -> list[dict[str, Any]]:
    return [e for e in case["events"] if e["type"] == "utterance"]


def vad_regions(case: Case, cfg: ReplayConfig = DEFAULT_REPLAY) -> list[tuple[float, float]]:
    regions: list[list[float]] = []
    for u in utterances(case):
        if regions and u["start_ms"] - regions[-1][1] < cfg.vad_stop_ms:
            regions[-1][1] = u["end_ms"]
        else:
            regions.append([u["start_ms"], u["end_ms"]])
    return [(a, b) for a, b in regions]


def horizon_ms(case: Case) -> int:
    last = 0.0
    for e in case["events"]:
        last = max(last, e.get("end_ms", 0), e.get("at_ms", 0))
        if e["type"] == "beep":
            last = max(last, e["start_ms"] + e["duration_ms"])
    return int(min(MAX_MS, last + TAIL_MS))


def input_events(case: Case, cfg: ReplayConfig = DEFAULT_REPLAY) -> list[Ev]:
    """Everything but audio: VAD, STT interim/final, AMD — at their arrival times."""
    evs: list[Ev] = []
    for start, end in vad_regions(case, cfg):
        evs.append(Ev(start + cfg.vad_start_ms, 1, "speech_started", {"start_ms": start}))
        evs.append(
            Ev(end + cfg.vad_stop_ms, 1, "speech_stopped", {"start_ms": start, "end_ms": end})
        )
    for u in utterances(case):
        words = u["text"].split()
        span = u["end_ms"] - u["start_ms"]
        t = u["start_ms"] + cfg.interim_every_ms
        while t < u["end_ms"] and words:
            k = int(len(words) * (t - u["start_ms"]) / span)
            if k > 0:
                evs.append(
                    Ev(
                        t + cfg.stt_latency_ms,
                        2,
                        "transcript",
                        {
                            "text": " ".join(words[:k]),
                            "is_final": False,
                            "start_ms": u["start_ms"],
                            "end_ms": t,
                        },
                    )
                )
            t += cfg.interim_every_ms
        evs.append(
            Ev(
                u["end_ms"] + cfg.final_latency_ms,
                2,
                "transcript",
                {
                    "text": u["text"],
                    "is_final": True,
                    "start_ms": u["start_ms"],
                    "end_ms": u["end_ms"],
                },
            )
        )
    for e in case["events"]:
        if e["type"] == "amd":
            evs.append(
                Ev(
                    e["at_ms"],
                    3,
                    "amd",
                    {
                        "answered_by": e["answered_by"],
                        "duration": e["machine_detection_duration_ms"],
                    },
                )
            )
    return evs


@dataclass(slots=True)
class Timing:
    frames: int = 0
    beep_s: float = 0.0
    arbiter_calls: int = 0
    arbiter_s: float = 0.0


def beep_events(case: Case, audio: npt.NDArray[np.int16], timing: Timing) -> list[Ev]:
    det = BeepDetector()
    out: list[Ev] = []
    step = SR * FRAME_MS // 1000
    t0 = time.perf_counter()
    for i in range(0, audio.size - step + 1, step):
        for be in det.process(audio[i : i + step]):
            out.append(Ev(be.detected_ms, 0, "beep", {"event": be}))
    timing.beep_s += time.perf_counter() - t0
    timing.frames += audio.size // step
    return out


@dataclass(slots=True)
class Outcome:
    label: str  # predicted: machine | human
    machine_ms: float | None = None  # when the machine verdict was reached
    opener_ms: float | None = None  # when the opener was allowed (people)
    first_label: str | None = None  # combined: the first committed state
    message_ms: float | None = None  # leave_message: when the message started
    message_trigger: str | None = None
    restarted: bool = False


def replay_arbiter(
    case: Case,
    events: list[Ev],
    horizon: int,
    action: VoicemailAction,
    settings: ArbiterSettings,
    timing: Timing,
) -> Outcome:
    arb = VoicemailArbiter(voicemail_action=action, settings=settings)
    ticks = [Ev(float(t), 9, "tick") for t in range(0, horizon + FRAME_MS, FRAME_MS)]
    out = Outcome(label="human")
    for ev in sorted(events + ticks):
        t0 = time.perf_counter()
        acts = _feed(arb, ev)
        timing.arbiter_s += time.perf_counter() - t0
        timing.arbiter_calls += 1
        done = False
        for a in acts:
            if isinstance(a, VoicemailDetected) and out.machine_ms is None:
                out.machine_ms = a.at_ms
            if isinstance(a, AllowOpener) and out.opener_ms is None:
                out.opener_ms = a.at_ms
            if out.first_label is None and arb.state != "listening":
                out.first_label = arb.state
            if isinstance(a, StartVoicemailMessage):
                if out.message_ms is None:
                    out.message_ms, out.message_trigger = a.at_ms, a.trigger
                elif a.restart:
                    out.restarted = True
            if isinstance(a, EndCall):
                done = True
        if done:
            break
    out.label = "machine" if arb.state == "machine" else "human"
    return out


def _feed(arb: VoicemailArbiter, ev: Ev) -> list[Action]:
    d = ev.data
    if ev.kind == "tick":
        return arb.tick(ev.at_ms)
    if ev.kind == "speech_started":
        return arb.on_speech_started(d["start_ms"], now_ms=ev.at_ms)
    if ev.kind == "speech_stopped":
        return arb.on_speech_stopped(d["start_ms"], d["end_ms"], now_ms=ev.at_ms)
    if ev.kind == "transcript":
        return arb.on_transcript(
            d["text"],
            is_final=d["is_final"],
            start_ms=d["start_ms"],
            end_ms=d["end_ms"],
            now_ms=ev.at_ms,
        )
    if ev.kind == "amd":
        return arb.on_amd(d["answered_by"], d["duration"], now_ms=ev.at_ms)
    if ev.kind == "beep":
        be: BeepEvent = d["event"]
        return arb.on_beep(be, now_ms=ev.at_ms)
    raise ValueError(ev.kind)


def replay_transcript(events: list[Ev], horizon: int, settings: ArbiterSettings) -> Outcome:
    clf = TranscriptClassifier(settings.transcript)
    ticks = [Ev(float(t), 9, "tick") for t in range(0, horizon + FRAME_MS, FRAME_MS)]
    for ev in sorted(events + ticks):
        d = ev.data
        if ev.kind == "tick":
            v = clf.tick(ev.at_ms)
        elif ev.kind == "speech_started":
            v = clf.on_speech_started(d["start_ms"], now_ms=ev.at_ms)
        elif ev.kind == "speech_stopped":
            v = clf.on_speech_stopped(d["start_ms"], d["end_ms"], now_ms=ev.at_ms)
        elif ev.kind == "transcript":
            v = clf.on_transcript(
                d["text"],
                is_final=d["is_final"],
                start_ms=d["start_ms"],
                end_ms=d["end_ms"],
                now_ms=ev.at_ms,
            )
        else:
            continue
        if v.decided and v.confidence >= settings.min_confidence:
            if v.label == "machine":
                return Outcome("machine", machine_ms=ev.at_ms)
            return Outcome("human", opener_ms=ev.at_ms)
    return Outcome("human")


def replay_amd(case: Case) -> Outcome:
    for e in case["events"]:
        if e["type"] == "amd":
            if e["answered_by"].startswith("machine"):
                return Outcome("machine", machine_ms=e["at_ms"])
            if e["answered_by"] == "human":
                return Outcome("human", opener_ms=e["at_ms"])
    return Outcome("human")


def replay_beep(beeps: list[Ev]) -> Outcome:
    for ev in beeps:
        if ev.data["event"].kind == "start":
            return Outcome("machine", machine_ms=ev.at_ms)
    return Outcome("human")


# ================================================================================ scoring


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    return float(np.percentile(np.asarray(xs), q))


@dataclass(slots=True)
class Score:
    n: int = 0
    correct: int = 0
    humans: int = 0
    false_machine: int = 0
    machines: int = 0
    missed: int = 0
    machine_ms: list[float] = field(default_factory=list)
    opener_after_hello_ms: list[float] = field(default_factory=list)
    opener_after_any_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    by_language: dict[str, list[int]] = field(default_factory=dict)  # lang -> [correct, n]

    def add(self, case: Case, out: Outcome, detail: str = "") -> None:
        self.n += 1
        ok = out.label == case["label"]
        self.correct += ok
        lang = self.by_language.setdefault(case["language"], [0, 0])
        lang[0] += ok
        lang[1] += 1
        if not ok:
            self.errors.append(f"{case['id']} ({case['category']}) -> {out.label} {detail}")
        if case["label"] == "human":
            self.humans += 1
            self.false_machine += out.label == "machine"
            before = [
                r for r in vad_regions(case) if out.opener_ms is not None and r[1] <= out.opener_ms
            ]
            if out.opener_ms is not None and before:
                gap = out.opener_ms - before[-1][1]
                self.opener_after_any_ms.append(gap)
                if sum(b - a for a, b in before) <= SHORT_GREETING_MS:
                    self.opener_after_hello_ms.append(gap)
        else:
            self.machines += 1
            self.missed += out.label != "machine"
            if out.label == "machine" and out.machine_ms is not None:
                self.machine_ms.append(out.machine_ms)

    def summary(self) -> dict[str, Any]:
        return {
            "cases": self.n,
            "accuracy": self.correct / self.n if self.n else None,
            "false_machine_rate": self.false_machine / self.humans if self.humans else None,
            "false_machines": self.false_machine,
            "humans": self.humans,
            "missed_machine_rate": self.missed / self.machines if self.machines else None,
            "missed_machines": self.missed,
            "machines": self.machines,
            "machine_verdict_median_ms": _pct(self.machine_ms, 50),
            "machine_verdict_p95_ms": _pct(self.machine_ms, 95),
            "opener_after_short_greeting_median_ms": _pct(self.opener_after_hello_ms, 50),
            "opener_after_short_greeting_p95_ms": _pct(self.opener_after_hello_ms, 95),
            "opener_after_short_greeting_max_ms": max(self.opener_after_hello_ms, default=None),
            "accuracy_by_language": {k: c / n for k, (c, n) in sorted(self.by_language.items())},
            "opener_after_any_speech_median_ms": _pct(self.opener_after_any_ms, 50),
            "opener_after_any_speech_p95_ms": _pct(self.opener_after_any_ms, 95),
        }


DETECTORS = ("transcript", "beep", "amd", "combined")


@dataclass(slots=True)
class Report:
    scores: dict[str, dict[str, Score]]  # split -> detector -> score
    message: dict[str, list[float]]
    message_counts: dict[str, int]
    timing: Timing
    opened_to_machines: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        t = self.timing
        return {
            "splits": {
                split: {d: s.summary() for d, s in det.items()}
                for split, det in self.scores.items()
            },
            "leave_message": {
                "start_after_beep_end_median_ms": _pct(self.message["after_beep"], 50),
                "start_after_beep_end_p95_ms": _pct(self.message["after_beep"], 95),
                "start_after_greeting_end_median_ms": _pct(self.message["after_greeting"], 50),
                **self.message_counts,
            },
            "opener_allowed_then_machine": self.opened_to_machines,
            "beep_us_per_frame": 1e6 * t.beep_s / t.frames if t.frames else None,
            "arbiter_us_per_call": 1e6 * t.arbiter_s / t.arbiter_calls if t.arbiter_calls else None,
        }


def load_cases(path: Path = CASES) -> list[Case]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def evaluate(
    cases: Iterable[Case],
    settings: ArbiterSettings | None = None,
    *,
    leave_message: bool = True,
    cfg: ReplayConfig = DEFAULT_REPLAY,
) -> Report:
    settings = settings or ArbiterSettings()
    timing = Timing()
    scores: dict[str, dict[str, Score]] = {}
    message: dict[str, list[float]] = {"after_beep": [], "after_greeting": []}
    counts = {
        "machines_with_beep": 0,
        "started_before_beep_end": 0,
        "restarted_on_beep": 0,
        "never_started": 0,
    }
    opened = {"machines": 0}
    for case in cases:
        horizon = horizon_ms(case)
        audio = synth_case_audio(case, horizon)
        beeps = beep_events(case, audio, timing)
        evs = input_events(case, cfg) + beeps
        outs = {
            "transcript": replay_transcript(input_events(case, cfg), horizon, settings),
            "beep": replay_beep(beeps),
            "amd": replay_amd(case),
            "combined": replay_arbiter(case, evs, horizon, "hangup", settings, timing),
        }
        comb = outs["combined"]
        if case["label"] == "machine" and comb.opener_ms is not None:
            opened["machines"] += 1
        for split in ("all", case["split"]):
            det = scores.setdefault(split, {d: Score() for d in DETECTORS})
            for name, out in outs.items():
                det[name].add(case, out, f"first={out.first_label}" if name == "combined" else "")
        if leave_message and case["label"] == "machine" and comb.label == "machine":
            lm = replay_arbiter(case, evs, horizon, "leave_message", settings, timing)
            beep = next((e for e in case["events"] if e["type"] == "beep"), None)
            last_end = max((u["end_ms"] for u in utterances(case)), default=0.0)
            if lm.message_ms is None:
                counts["never_started"] += 1
            elif beep is not None:
                counts["machines_with_beep"] += 1
                beep_end = beep["start_ms"] + beep["duration_ms"]
                if lm.restarted:
                    counts["restarted_on_beep"] += 1
                elif lm.message_ms < beep_end:
                    counts["started_before_beep_end"] += 1
                else:
                    message["after_beep"].append(lm.message_ms - beep_end)
            else:
                message["after_greeting"].append(lm.message_ms - last_end)
    return Report(scores, message, counts, timing, opened)


def _fmt_ms(v: float | None) -> str:
    return "-" if v is None else f"{v / 1000:.2f}s"


def print_report(rep: Report, errors: list[str]) -> None:
    for split, det in rep.scores.items():
        print(f"\n== {split} ==")
        print(
            f"{'detector':<11}{'n':>4}{'acc':>8}{'false-M':>12}{'missed-M':>12}"
            f"{'M med':>8}{'M p95':>8}{'open med':>9}{'open p95':>9}{'open max':>9}"
        )
        for name, sc in det.items():
            s = sc.summary()
            print(
                f"{name:<11}{s['cases']:>4}{s['accuracy']:>8.1%}"
                f"{s['false_machines']:>4}/{s['humans']:<3}{s['false_machine_rate']:>5.1%}"
                f"{s['missed_machines']:>4}/{s['machines']:<3}{s['missed_machine_rate']:>5.1%}"
                f"{_fmt_ms(s['machine_verdict_median_ms']):>8}{_fmt_ms(s['machine_verdict_p95_ms']):>8}"
                f"{_fmt_ms(s['opener_after_short_greeting_median_ms']):>9}"
                f"{_fmt_ms(s['opener_after_short_greeting_p95_ms']):>9}"
                f"{_fmt_ms(s['opener_after_short_greeting_max_ms']):>9}"
            )
        langs = det["combined"].by_language
        print(
            "combined by language: "
            + ", ".join(f"{k} {c}/{n}" for k, (c, n) in sorted(langs.items()))
        )
        if split in errors:
            for name in DETECTORS:
                for err in det[name].errors:
                    print(f"   {name}: {err}")
    d = rep.as_dict()
    print(
        "\nopener columns: people whose speech before the opener lasted <= 1.6 s in all "
        "('Hello?'), from the end of that speech to the opener being allowed"
    )
    print(f"leave_message: {json.dumps(d['leave_message'])}")
    print(
        f"machines that got the opener allowed before the machine verdict: "
        f"{rep.opened_to_machines['machines']}"
    )
    print(
        f"beep detector: {d['beep_us_per_frame']:.1f} us per 20 ms frame; "
        f"arbiter: {d['arbiter_us_per_call']:.1f} us per event"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=Path, default=CASES)
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--errors",
        nargs="*",
        default=[],
        metavar="SPLIT",
        help="list misclassified cases of these splits (dev, heldout, heldout2, heldout3, "
        "heldout4, heldout5, heldout6, heldout7, all); heldout7 is the blind split: looking at "
        "its "
        "errors makes it no longer blind",
    )
    p.add_argument(
        "--splits",
        nargs="*",
        default=None,
        metavar="SPLIT",
        help="replay only the cases of these splits (default: all); leave out heldout7, the "
        "blind split, while working on the detectors",
    )
    p.add_argument(
        "--interim-ms",
        type=int,
        default=DEFAULT_REPLAY.interim_every_ms,
        help="STT interim cadence (ms of audio between interim results)",
    )
    p.add_argument("--stt-latency-ms", type=int, default=DEFAULT_REPLAY.stt_latency_ms)
    p.add_argument("--vad-stop-ms", type=int, default=DEFAULT_REPLAY.vad_stop_ms)
    args = p.parse_args(argv)
    cfg = ReplayConfig(
        vad_stop_ms=args.vad_stop_ms,
        interim_every_ms=args.interim_ms,
        stt_latency_ms=args.stt_latency_ms,
    )
    cases = load_cases(args.cases)
    if args.splits is not None:
        cases = [c for c in cases if c["split"] in args.splits]
    rep = evaluate(cases, cfg=cfg)
    if args.json:
        print(json.dumps({"replay": asdict(cfg), **rep.as_dict()}, indent=2))
    else:
        print(f"replay: {cfg}")
        print_report(rep, args.errors)
    return 0


if __name__ == "__main__":
    sys.exit(main())
