"""Prometheus metrics in the text exposition format (no client library needed).

One :class:`Metrics` instance lives on the app state. It counts HTTP requests by method, route
template and status, records their latency in a histogram, and counts outbound-call outcomes.
Gauges that live in the database (calls in flight) are read at scrape time by the route.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

__all__ = ["Metrics"]

_BUCKETS_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass(slots=True)
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(_BUCKETS_SECONDS) + 1))
    total: float = 0.0
    n: int = 0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(_BUCKETS_SECONDS):
            if value <= bound:
                self.counts[i] += 1
                break
        else:
            self.counts[-1] += 1
        self.total += value
        self.n += 1


def _labels(**labels: str) -> str:
    parts = []
    for key, value in labels.items():
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        parts.append(f'{key}="{escaped}"')
    return "{" + ",".join(parts) + "}"


class Metrics:
    """Counters and histograms for one process."""

    __slots__ = ("_calls", "_latency", "_requests")

    def __init__(self) -> None:
        self._requests: defaultdict[tuple[str, str, str], int] = defaultdict(int)
        self._latency: defaultdict[tuple[str, str], _Histogram] = defaultdict(_Histogram)
        self._calls: defaultdict[str, int] = defaultdict(int)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self._requests[(method, route, str(status))] += 1
        self._latency[(method, route)].observe(seconds)

    def count_outbound(self, outcome: str) -> None:
        """``outcome``: created, rejected (validation), limited (429), dial_failed."""
        self._calls[outcome] += 1

    def render(self, gauges: dict[str, float] | None = None) -> str:
        out: list[str] = [
            "# HELP nixflex_http_requests_total HTTP requests by method, route and status.",
            "# TYPE nixflex_http_requests_total counter",
        ]
        for (method, route, status), n in sorted(self._requests.items()):
            labels = _labels(method=method, route=route, status=status)
            out.append(f"nixflex_http_requests_total{labels} {n}")
        out += [
            "# HELP nixflex_http_request_duration_seconds HTTP request latency.",
            "# TYPE nixflex_http_request_duration_seconds histogram",
        ]
        for (method, route), hist in sorted(self._latency.items()):
            cumulative = 0
            for bound, count in zip((*_BUCKETS_SECONDS, math.inf), hist.counts, strict=True):
                cumulative += count
                le = "+Inf" if bound == math.inf else repr(bound)
                labels = _labels(method=method, route=route, le=le)
                out.append(f"nixflex_http_request_duration_seconds_bucket{labels} {cumulative}")
            labels = _labels(method=method, route=route)
            out.append(f"nixflex_http_request_duration_seconds_sum{labels} {hist.total!r}")
            out.append(f"nixflex_http_request_duration_seconds_count{labels} {hist.n}")
        out += [
            "# HELP nixflex_outbound_calls_total Outbound call requests by outcome.",
            "# TYPE nixflex_outbound_calls_total counter",
        ]
        for outcome, n in sorted(self._calls.items()):
            out.append(f"nixflex_outbound_calls_total{_labels(outcome=outcome)} {n}")
        for name, value in sorted((gauges or {}).items()):
            out.append(f"# TYPE {name} gauge")
            out.append(f"{name} {value!r}")
        return "\n".join(out) + "\n"
