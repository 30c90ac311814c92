"""The documentation runs: every ```python block in docs/*.md is executed, page by page.

Blocks of a page run in order in one namespace (a page reads like a session), with top-level
``await`` allowed, from the repository root (so ``examples`` imports). A block fenced
```python illustrative is only compiled. Also: the configuration reference is in sync with the
``Settings`` object, the README links the docs, every relative link in docs/ resolves, and the
turn-latency plot renders.
"""

from __future__ import annotations

import ast
import inspect
import json
import re
import sys
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from nixflex_engine.docs_config import render

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)


def python_blocks(page: Path) -> list[tuple[int, str, bool]]:
    """``(line, code, executed)`` of each python block of ``page``."""
    text = page.read_text()
    blocks = []
    for match in FENCE.finditer(text):
        info = match.group(1).strip().split()
        if not info or info[0] != "python":
            continue
        line = text.count("\n", 0, match.start()) + 2
        blocks.append((line, match.group(2), "illustrative" not in info[1:]))
    return blocks


PAGES = sorted(p for p in DOCS.glob("*.md") if python_blocks(p))


def test_pages_with_code_are_found() -> None:
    names = {p.name for p in PAGES}
    assert {"concepts.md", "writing-a-processor.md", "chains-and-sandbox.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
async def test_every_python_block_runs(page: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT))
    monkeypatch.chdir(ROOT)
    name = f"docs_{page.stem.replace('-', '_')}"
    module = types.ModuleType(name)
    monkeypatch.setitem(sys.modules, name, module)  # dataclasses look their module up
    illustrative = 0
    for line, code, executed in python_blocks(page):
        compiled = compile(
            code, f"{page.relative_to(ROOT)}:{line}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        )
        if not executed:
            illustrative += 1
            continue
        result = eval(compiled, module.__dict__)
        if inspect.iscoroutine(result):
            await result
    blocks = len(python_blocks(page))
    assert illustrative <= max(1, blocks // 3), f"{page.name}: keep illustrative blocks rare"


def test_the_configuration_reference_is_in_sync() -> None:
    checked_in = (DOCS / "configuration.md").read_text()
    assert checked_in == render(), (
        "docs/configuration.md is stale: run "
        "`python -m nixflex_engine.docs_config > docs/configuration.md`"
    )


def test_every_setting_is_in_the_reference() -> None:
    from nixflex_engine.config import Settings

    text = render()
    for name in Settings.model_fields:
        assert f"`NIXFLEX_{name.upper()}`" in text, name


def test_the_readme_links_every_page_and_links_resolve() -> None:
    readme = (ROOT / "README.md").read_text()
    index = (DOCS / "README.md").read_text()
    assert "docs/README.md" in readme
    for page in sorted(DOCS.glob("*.md")):
        if page.name != "README.md":
            assert f"({page.name})" in index, f"docs/README.md does not link {page.name}"
    for page in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            assert (page.parent / target).exists(), f"{page.name}: broken link {target}"


def _plotter() -> types.ModuleType:
    import importlib.util

    path = ROOT / "benchmarks" / "_plot_turn_latency.py"
    spec = importlib.util.spec_from_file_location("plot_turn_latency", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _scenario(engine: str, mode: str, measured: float, profile: bool) -> dict[str, object]:
    summary: dict[str, object] = {
        "measured_ms": {"p50": measured},
        "injected_ms": {"p50": 900.0},
    }
    if profile:
        summary["profile"] = {
            "vad_stop_ms": {"p50": 300.0},
            "final_ms": {"p50": 450.0},
            "decided_ms": {"p50": 451.0},
            "decided_to_llm_start_ms": {"p50": 360.0},
            "first_chunk_token_ms": {"p50": 60.0},
            "chunk_to_first_audio_ms": {"p50": 120.0},
        }
    return {"engine": engine, "mode": mode, "concurrency": 1, "summary": summary}


def test_the_turn_latency_waterfall_renders(tmp_path: Path) -> None:
    plot = _plotter()
    results = {
        "machine": {"utc": "2026-01-01T00:00:00Z"},
        "scenarios": [
            _scenario("nixflex", "standard", 1000.0, True),
            _scenario("pipecat", "pipecat-ws", 1200.0, False),
        ],
    }
    steps = plot.waterfall_steps(results["scenarios"][0])
    assert [round(end) for _, _, end in steps] == [300, 450, 451, 811, 871, 991, 1000]
    assert all(start <= end for _, start, end in steps)
    assert plot.totals(results) == [
        ("nixflex standard", 1000.0),
        ("Pipecat (ws)", 1200.0),
        ("injected by the fakes", 900.0),
    ]
    source, target = tmp_path / "turn_latency.json", tmp_path / "w.svg"
    source.write_text(json.dumps(results))
    assert plot.main([str(source), str(target)]) == 0
    svg = ET.fromstring(target.read_text())
    texts = [t.text for t in svg.iter("{http://www.w3.org/2000/svg}text")]
    assert "LLM: first token" in texts and "Pipecat (ws)" in texts and "1000 (+9)" in texts
    assert plot.main([str(tmp_path / "missing.json"), str(target)]) == 1


def test_make_bench_rewrites_only_the_figures_section(tmp_path: Path) -> None:
    plot = _plotter()
    results = {
        "machine": {"utc": "2026-01-01T00:00:00Z", "cpu_count": 2},
        "scenarios": [_scenario("nixflex", "standard", 1000.0, True)],
        "comparison": {
            "targets": {"overhead_x1": {"p50_ms": 3.0, "target": "p50 <= 5 ms", "met": True}}
        },
    }
    (tmp_path / "turn_latency.json").write_text(json.dumps(results))
    section = plot.figures_markdown(tmp_path)
    assert "| nixflex standard | 1 | 1,000 / n/a | 900 |" in section
    assert "`overhead_x1`: p50_ms 3.0 — target p50 <= 5 ms: met" in section
    page = tmp_path / "benchmarks.md"
    page.write_text(f"# B\n\nbefore\n{plot.START}\nold figures\n{plot.END}\nafter\n")
    assert plot.update_docs(page, section)
    text = page.read_text()
    assert "old figures" not in text and section in text
    assert text.startswith("# B\n\nbefore\n") and text.endswith(f"{plot.END}\nafter\n")
    assert not plot.update_docs(tmp_path / "none.md", section)
    checked_in = (DOCS / "benchmarks.md").read_text()
    assert plot.START in checked_in and plot.END in checked_in
