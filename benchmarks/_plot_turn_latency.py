"""Draw the turn-latency waterfall of ``benchmarks/results/turn_latency.json`` as an SVG.

::

    .venv/bin/python benchmarks/_plot_turn_latency.py [RESULTS_JSON [OUT_SVG]]

(``make bench`` runs it after the benchmarks: ``benchmarks/run_all.sh``.) The first panel is
the waterfall of one turn of the standard chain at one call — from the moment the caller
stops speaking to the moment the callee hears the agent's first audio — built from the p50 of
each step the engine profiles (VAD stop, final transcript, turn decided, LLM first token,
first sentence chunk, TTS first audio, heard). The second panel compares the p50 totals of
every scenario at one call (ours standard and preemptive, Pipecat's, and what the fakes
inject: the floor no engine can beat). Plain SVG text: no plotting library.

When it reads the kept results (``benchmarks/results/turn_latency.json``, not a ``--quick``
run) it also rewrites the figures section of ``docs/benchmarks.md`` (between the
``<!-- figures:start -->`` and ``<!-- figures:end -->`` markers) from the JSON files in
``benchmarks/results/``, so the docs show the latest ``make bench``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_IN = ROOT / "benchmarks" / "results" / "turn_latency.json"
DOCS_PAGE = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- figures:start -->", "<!-- figures:end -->"

WIDTH = 860
LEFT = 230  # label column
RIGHT = 150  # value column
ROW = 26
COLORS = ("#4e79a7", "#59a14f", "#9c755f", "#e15759", "#f28e2b", "#76b7b2", "#b07aa1")


def _p50(summary: Mapping[str, Any], *path: str) -> float | None:
    node: Any = summary
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    value = node.get("p50") if isinstance(node, Mapping) else None
    return float(value) if isinstance(value, int | float) else None


def waterfall_steps(scenario: Mapping[str, Any]) -> list[tuple[str, float, float]]:
    """``(label, start_ms, end_ms)`` per step of a scenario's p50 profile (from speech end)."""
    s = scenario.get("summary", {})
    vad = _p50(s, "profile", "vad_stop_ms")
    final = _p50(s, "profile", "final_ms")
    decided = _p50(s, "profile", "decided_ms")
    to_llm = _p50(s, "profile", "decided_to_llm_start_ms")
    chunk = _p50(s, "profile", "first_chunk_token_ms")
    to_audio = _p50(s, "profile", "chunk_to_first_audio_ms")
    heard = _p50(s, "measured_ms")
    if None in (vad, final, decided, to_llm, chunk, to_audio, heard):
        return []
    assert vad is not None and final is not None and decided is not None
    assert to_llm is not None and chunk is not None and to_audio is not None
    assert heard is not None
    marks = [
        ("VAD: caller stopped", vad),
        ("STT: final transcript", max(final, vad)),
        ("turn decided", max(decided, final)),
        ("LLM: first token", decided + to_llm),
        ("first sentence chunk", decided + to_llm + chunk),
        ("TTS: first audio", decided + to_llm + chunk + to_audio),
        ("heard by the caller", heard),
    ]
    steps: list[tuple[str, float, float]] = []
    start = 0.0
    for label, end in marks:
        end = max(end, start)
        steps.append((label, start, end))
        start = end
    return steps


def totals(results: Mapping[str, Any]) -> list[tuple[str, float]]:
    """``(label, p50 ms)``: each one-call scenario's heard latency, then the injected floor."""
    rows: list[tuple[str, float]] = []
    floor: float | None = None
    for sc in results.get("scenarios", []):
        if sc.get("concurrency") != 1:
            continue
        measured = _p50(sc.get("summary", {}), "measured_ms")
        if measured is None:
            continue
        mode = str(sc.get("mode", ""))
        if sc.get("engine") == "nixflex":
            rows.append((f"nixflex {mode}", measured))
        else:
            rows.append((f"Pipecat ({mode.removeprefix('pipecat-')})", measured))
        if floor is None and sc.get("mode") == "standard":
            floor = _p50(sc.get("summary", {}), "injected_ms")
    if floor is not None:
        rows.append(("injected by the fakes", floor))
    return rows


def _axis(out: list[str], y: float, height: float, scale: float, max_ms: float) -> None:
    step = 100 if max_ms <= 1500 else 250 if max_ms <= 4000 else 1000
    tick = 0
    while tick <= max_ms:
        x = LEFT + tick * scale
        out.append(
            f'<line x1="{x:.1f}" y1="{y:.1f}" x2="{x:.1f}" y2="{y + height:.1f}" '
            'stroke="#ddd" stroke-width="1"/>'
        )
        out.append(
            f'<text x="{x:.1f}" y="{y + height + 14:.1f}" font-size="11" fill="#666" '
            f'text-anchor="middle">{tick}</text>'
        )
        tick += step


def render_svg(results: Mapping[str, Any]) -> str:
    """The SVG document for ``results`` (the turn-latency benchmark's JSON)."""
    scenarios: Sequence[Mapping[str, Any]] = results.get("scenarios", [])
    standard = next(
        (
            sc
            for sc in scenarios
            if sc.get("engine") == "nixflex"
            and sc.get("mode") == "standard"
            and sc.get("concurrency") == 1
        ),
        None,
    )
    steps = waterfall_steps(standard) if standard is not None else []
    bars = totals(results)
    max_ms = max([end for _, _, end in steps] + [v for _, v in bars] + [1.0])
    scale = (WIDTH - LEFT - RIGHT) / max_ms
    out: list[str] = []
    y = 20.0
    utc = escape(str(results.get("machine", {}).get("utc", "")))
    out.append(
        f'<text x="10" y="{y:.0f}" font-size="15" font-weight="bold">Turn latency: caller '
        "stops speaking → caller hears the agent (p50, ms)</text>"
    )
    y += 18
    out.append(
        f'<text x="10" y="{y:.0f}" font-size="11" fill="#666">make bench, '
        f"benchmarks/turn_latency.py, one call at a time; run {utc}</text>"
    )
    y += 22
    if steps:
        top = y
        _axis(out, top, ROW * len(steps), scale, max_ms)
        for i, (label, start, end) in enumerate(steps):
            yy = top + i * ROW
            out.append(
                f'<text x="{LEFT - 8}" y="{yy + 17:.1f}" font-size="12" '
                f'text-anchor="end">{escape(label)}</text>'
            )
            out.append(
                f'<rect x="{LEFT + start * scale:.1f}" y="{yy + 5:.1f}" '
                f'width="{max((end - start) * scale, 1.5):.1f}" height="{ROW - 10}" '
                f'fill="{COLORS[i % len(COLORS)]}"/>'
            )
            out.append(
                f'<text x="{WIDTH - RIGHT + 8}" y="{yy + 17:.1f}" font-size="12">'
                f"{end:.0f} (+{end - start:.0f})</text>"
            )
        y = top + ROW * len(steps) + 34
    else:
        out.append(f'<text x="10" y="{y + 10:.0f}" font-size="12">(no profile)</text>')
        y += 30
    if bars:
        out.append(
            f'<text x="10" y="{y:.0f}" font-size="13" font-weight="bold">'
            "Heard latency by engine (p50, ms)</text>"
        )
        y += 10
        top = y
        _axis(out, top, ROW * len(bars), scale, max_ms)
        for i, (label, value) in enumerate(bars):
            yy = top + i * ROW
            color = (
                "#bbb"
                if label.startswith("injected")
                else ("#4e79a7" if label.startswith("nixflex") else "#e15759")
            )
            out.append(
                f'<text x="{LEFT - 8}" y="{yy + 17:.1f}" font-size="12" '
                f'text-anchor="end">{escape(label)}</text>'
            )
            out.append(
                f'<rect x="{LEFT}" y="{yy + 5:.1f}" width="{max(value * scale, 1.5):.1f}" '
                f'height="{ROW - 10}" fill="{color}"/>'
            )
            out.append(
                f'<text x="{WIDTH - RIGHT + 8}" y="{yy + 17:.1f}" font-size="12">{value:.0f}</text>'
            )
        y = top + ROW * len(bars) + 30
    height = int(y + 6)
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif">'
        f'<rect width="{WIDTH}" height="{height}" fill="white"/>'
    )
    return head + "\n" + "\n".join(out) + "\n</svg>\n"


def _ms(node: Any, key: str = "p50") -> str:
    value = node.get(key) if isinstance(node, Mapping) else None
    return f"{value:,.0f}" if isinstance(value, int | float) else "n/a"


def _load(path: Path) -> Mapping[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, Mapping) else None


def figures_markdown(results_dir: Path) -> str:
    """The figures section of ``docs/benchmarks.md`` from the JSON files in ``results_dir``."""
    out: list[str] = []
    turn = _load(results_dir / "turn_latency.json")
    if turn is not None:
        machine = turn.get("machine", {})
        out.append(
            f"Turn latency — run {machine.get('utc', '?')}, {machine.get('cpu_count', '?')} "
            f"cores, `{str(machine.get('uptime', '')).strip()}`:"
        )
        out.append("")
        out.append(
            "| scenario | calls at once | heard p50 / p95 (ms) | injected p50 (ms) "
            "| overhead p50 / p95 (ms) | barge-in clear after threshold p50 / max (ms) |"
        )
        out.append("|---|---|---|---|---|---|")
        for sc in turn.get("scenarios", []):
            s = sc.get("summary", {})
            mode = str(sc.get("mode", ""))
            name = "nixflex" if sc.get("engine") == "nixflex" else "Pipecat 1.14"
            out.append(
                f"| {name} {mode.removeprefix('pipecat-')} | {sc.get('concurrency', '?')} "
                f"| {_ms(s.get('measured_ms'))} / {_ms(s.get('measured_ms'), 'p95')} "
                f"| {_ms(s.get('injected_ms'))} "
                f"| {_ms(s.get('overhead_ms'))} / {_ms(s.get('overhead_ms'), 'p95')} "
                f"| {_ms(s.get('barge_in_after_threshold_ms'))} / "
                f"{_ms(s.get('barge_in_after_threshold_ms'), 'max')} |"
            )
        targets = turn.get("comparison", {}).get("targets", {})
        if targets:
            out.append("")
            out.append("Targets (from the JSON's `comparison.targets`):")
            out.append("")
            for name, t in targets.items():
                if not isinstance(t, Mapping) or "target" not in t:
                    continue
                shown = {k: v for k, v in t.items() if k.endswith("_ms")}
                values = ", ".join(f"{k} {v}" for k, v in shown.items())
                verdict = "met" if t.get("met") else "**not met**"
                out.append(f"- `{name}`: {values} — target {t['target']}: {verdict}")
    comparison = _load(results_dir / "comparison.json")
    if comparison is not None:
        out.append("")
        out.append(
            f"Frame overhead against Pipecat 1.14 — run "
            f"{comparison.get('machine', {}).get('utc', '?')} (details: "
            "[benchmarks/README.md](../benchmarks/README.md)):"
        )
        out.append("")
        for name, t in comparison.get("targets", {}).items():
            if isinstance(t, Mapping):
                shown = {k: v for k, v in t.items() if k != "met"}
                values = ", ".join(
                    f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items()
                )
                verdict = "met" if t.get("met") else "**not met**"
                out.append(f"- `{name}`: {values}: {verdict}")
    webhooks = _load(results_dir / "webhook_delivery.json")
    if webhooks is not None:
        out.append("")
        for run in webhooks.get("runs", []):
            out.append(
                f"Webhook delivery ({run.get('database')}, {run.get('deliveries')} deliveries, "
                f"{run.get('worker_processes')} worker process(es)): "
                f"{run.get('deliveries_per_s')}/s, all delivered: {run.get('all_delivered')}."
            )
    return "\n".join(out) + "\n"


def update_docs(page: Path, section: str) -> bool:
    """Replace the text between the figures markers of ``page``; False if it has none."""
    try:
        text = page.read_text()
    except OSError:
        return False
    if START not in text or END not in text:
        return False
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    page.write_text(f"{head}{START}\n{section}{END}{tail}")
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Read the results (default ``benchmarks/results/turn_latency.json``), write the SVG
    (default: next to them, ``turn_latency_waterfall.svg``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    source = Path(args[0]) if args else DEFAULT_IN
    target = Path(args[1]) if len(args) > 1 else source.with_name("turn_latency_waterfall.svg")
    if not source.exists():
        print(f"_plot_turn_latency: {source} does not exist (run the benchmark first)")
        return 1
    target.write_text(render_svg(json.loads(source.read_text())))
    print(f"turn-latency waterfall: {target}")
    if source.resolve() == DEFAULT_IN.resolve() and update_docs(
        DOCS_PAGE, figures_markdown(source.parent)
    ):
        print(f"latest figures: {DOCS_PAGE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
