"""Operations routes: ``/healthz``, ``/metrics``, ``/openapi.json`` (no API key)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from nixflex_engine.api.errors import ApiError, error_response
from nixflex_engine.api.openapi import openapi_document
from nixflex_engine.api.routing import Services
from nixflex_engine.log import get_logger, log_event

__all__ = ["routes"]

_log = get_logger(__name__)


async def healthz(request: Request) -> Response:
    services: Services = request.app.state.services
    try:
        await services.repos.db.ping()
    except Exception as exc:
        log_event(_log, "health.database_unavailable", error=type(exc).__name__)
        return error_response(
            ApiError(503, "database_unavailable", "The database is not reachable.")
        )
    return JSONResponse({"status": "ok", "database": "ok"})


async def metrics(request: Request) -> Response:
    services: Services = request.app.state.services
    gauges: dict[str, float] = {"nixflex_up": 1.0}
    try:
        in_flight = await services.repos.accounts.total_calls_in_flight()
        gauges["nixflex_calls_in_flight"] = float(in_flight)
    except Exception as exc:
        log_event(_log, "metrics.database_unavailable", error=type(exc).__name__)
        gauges["nixflex_up"] = 0.0
    return Response(
        services.metrics.render(gauges), media_type="text/plain; version=0.0.4; charset=utf-8"
    )


async def openapi(request: Request) -> Response:
    services: Services = request.app.state.services
    return JSONResponse(openapi_document(services.settings.public_base_url))


def routes() -> list[Route]:
    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]
