"""``GET /v1/usage``: the account's calls, minutes, calls in flight and peak concurrency."""

from __future__ import annotations

from starlette.routing import Route

from nixflex_engine.api.fields import parse_timestamp
from nixflex_engine.api.routing import ApiCall, Reply, endpoint

__all__ = ["routes"]


async def get_usage(call: ApiCall) -> Reply:
    raw_since = call.query.get("since")
    since = parse_timestamp("since", raw_since) if raw_since else None
    usage = await call.services.repos.accounts.usage(call.account_id, since=since)
    limit = usage.max_concurrent_calls or call.services.settings.default_max_concurrent_calls
    return Reply(
        200,
        {
            "calls": usage.calls,
            "completed_calls": usage.completed_calls,
            "failed_calls": usage.failed_calls,
            "minutes": round(usage.total_duration_seconds / 60.0, 2),
            "in_flight": usage.calls_in_flight,
            "peak_concurrency": usage.peak_concurrent_calls,
            "max_concurrent_calls": limit,
            "since": raw_since and since and since.isoformat().replace("+00:00", "Z"),
        },
    )


def routes() -> list[Route]:
    return [Route("/v1/usage", endpoint(get_usage), methods=["GET"])]
