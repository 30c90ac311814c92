"""The Starlette app: routes only — each validates, calls a service, shapes the response.

:func:`create_app` builds the app from a :class:`~nixflex_engine.config.Settings` and a
:class:`~nixflex_engine.calls.dialer.Dialer`. On start-up (the lifespan) it opens the database,
applies migrations and builds the services; they live on ``app.state.services``. Other parts of
the engine add their routes with ``extra_routes`` (carrier callbacks, media streams, sandbox
fakes), so there is one app and one error envelope.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from nixflex_engine.api import account, agents, calls, keys, phone_numbers, system
from nixflex_engine.api import campaigns as campaign_api
from nixflex_engine.api.errors import ApiError, error_response
from nixflex_engine.api.metrics import Metrics
from nixflex_engine.api.middleware import RequestContextMiddleware
from nixflex_engine.api.ratelimit import RateLimiter
from nixflex_engine.api.routing import AuthCache, Services
from nixflex_engine.api.twilio import carrier_routes
from nixflex_engine.calls.after import AfterCallWork
from nixflex_engine.calls.analysis import analysis_client
from nixflex_engine.calls.campaigns import CampaignDispatcher, OnCampaignCompleted
from nixflex_engine.calls.chain import build_standard_chain
from nixflex_engine.calls.dialer import Dialer
from nixflex_engine.calls.outbound import OutboundCallService
from nixflex_engine.calls.recordings import LocalRecordingStore, RecordingStore
from nixflex_engine.calls.session import CallSessions, ChainFactory
from nixflex_engine.calls.webhooks import WebhookWorker
from nixflex_engine.config import Settings
from nixflex_engine.crypto import Crypto
from nixflex_engine.log import get_logger, log_event
from nixflex_engine.store.campaigns import CampaignRecord
from nixflex_engine.store.db import Database, upgrade
from nixflex_engine.store.repositories import CallRecord, Repositories

__all__ = ["MAX_BODY_BYTES", "api_routes", "build_services", "create_app"]

MAX_BODY_BYTES = 1024 * 1024
_log = get_logger(__name__)


def api_routes() -> list[BaseRoute]:
    """Every route of the public API and the operations endpoints."""
    return [
        # before calls.routes(): /v1/calls/{call_id} would match /v1/calls/batch
        *campaign_api.routes(),
        *calls.routes(),  # hottest first: routes are matched in order
        *keys.routes(),
        *agents.routes(),
        *phone_numbers.routes(),
        *account.routes(),
        *system.routes(),
    ]


def build_services(
    settings: Settings, db: Database, *, dialer: Dialer | None, metrics: Metrics
) -> Services:
    repos = Repositories.over(db)
    crypto = Crypto.from_settings(settings)
    return Services(
        settings=settings,
        repos=repos,
        crypto=crypto,
        dialer=dialer,
        rate_limiter=RateLimiter(
            reads_per_minute=settings.rate_limit_reads_per_minute,
            writes_per_minute=settings.rate_limit_writes_per_minute,
        ),
        metrics=metrics,
        auth_cache=AuthCache(settings.auth_cache_seconds),
        recordings=LocalRecordingStore(settings.recordings_dir),
        outbound=OutboundCallService(
            repos=repos,
            crypto=crypto,
            dialer=dialer,
            default_max_concurrent_calls=settings.default_max_concurrent_calls,
            concurrency_retry_after_seconds=settings.concurrent_call_retry_after_seconds,
            metrics=metrics,
        ),
    )


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        error = ApiError(404, "not_found", "No such route.", {"path": request.url.path[:200]})
    elif exc.status_code == 405:
        error = ApiError(
            405,
            "method_not_allowed",
            f"{request.method} is not allowed on this route.",
            {"method": request.method[:20]},
        )
    else:
        error = ApiError(exc.status_code, "http_error", str(exc.detail)[:200])
    return error_response(error, dict(exc.headers or {}))


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def keep_recording(store: RecordingStore, record: CallRecord) -> None:
    """After the call: hand the recorder's WAV to the recording store (a no-op for the local
    directory, where the recorder already wrote it in place)."""
    if not record.recording_path:
        return
    try:
        await store.save(record.call_id, Path(record.recording_path))
    except FileNotFoundError:
        log_event(_log, "calls.recording_missing", level=logging.WARNING, call_id=record.call_id)


def _wake_on_completed(worker: WebhookWorker) -> OnCampaignCompleted:
    """A campaign completed: its ``campaign.completed`` rows are in the outbox; send now."""

    async def wake(_campaign: CampaignRecord) -> None:
        worker.wake()

    return wake


def create_app(
    settings: Settings,
    *,
    dialer: Dialer | None = None,
    extra_routes: Sequence[BaseRoute] = (),
    migrate: bool = True,
    chain_factory: ChainFactory = build_standard_chain,
    analysis: bool = True,
    reconcile_stale_after_s: float | None = None,
    reconcile_ringing_after_s: float | None = None,
    close_dialer: bool = False,
) -> Starlette:
    """The engine's ASGI app.

    ``dialer`` places calls (``None``: outbound calls answer 502 ``outbound_failed`` with
    ``dialer_not_configured``). ``migrate`` applies database migrations on start-up.
    ``chain_factory`` turns an agent into its processor chain for each call; ``analysis``
    runs the post-call analysis (through the Anthropic settings) after each call.
    ``reconcile_stale_after_s``: a live call no node has touched for this long is reconciled
    with the carrier (at start-up, after migrations, and periodically; see
    :meth:`CallSessions.reconcile`); ``reconcile_ringing_after_s`` the same for a call still
    queued or ringing (the carrier may ring for a minute without telling anyone). Each
    defaults to its setting (``reconcile_stale_after_seconds``, 30 s;
    ``reconcile_ringing_after_seconds``, 150 s); pass them to override (tests, embedders).
    ``close_dialer``: the app owns ``dialer`` and closes it (``aclose``) at shutdown.
    """
    metrics = Metrics()
    if reconcile_stale_after_s is None:
        reconcile_stale_after_s = settings.reconcile_stale_after_seconds
    if reconcile_ringing_after_s is None:
        reconcile_ringing_after_s = settings.reconcile_ringing_after_seconds

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        db = Database(settings.database_url)
        client = analysis_client(settings) if analysis else None
        sessions: CallSessions | None = None
        webhooks: WebhookWorker | None = None
        maintenance: asyncio.Task[None] | None = None
        dispatcher: CampaignDispatcher | None = None
        try:
            if migrate:
                await upgrade(db)
            services = build_services(settings, db, dialer=dialer, metrics=metrics)
            app.state.services = services
            after = AfterCallWork(
                repos=services.repos, client=client, default_model=settings.llm_model
            )
            app.state.after_call = after
            after.add_on_final(functools.partial(keep_recording, services.recordings))
            webhooks = WebhookWorker(
                repos=services.repos,
                crypto=services.crypto,
                serialize=lambda record: calls.call_json(record, settings),
                allow_private=settings.allow_private_webhook_urls,
                timeout_s=settings.webhook_timeout_seconds,
                lease_s=settings.webhook_lease_seconds,
                max_concurrency=settings.webhook_max_concurrency,
                poll_interval_s=settings.webhook_poll_interval_seconds,
                retention_s=settings.webhook_retention_days * 86400.0,
            )
            after.add_on_final(webhooks.on_call_final)
            webhooks.start()
            app.state.webhooks = webhooks
            sessions = CallSessions(
                settings=settings,
                repos=services.repos,
                crypto=services.crypto,
                dialer=dialer,
                chain_factory=chain_factory,
                after_call=after,
                stale_after_s=reconcile_stale_after_s,
                ring_stale_after_s=reconcile_ringing_after_s,
            )
            app.state.sessions = sessions
            try:
                await sessions.reconcile()
            except Exception as exc:  # the database may be down: serve 503s, retry later
                log_event(_log, "server.reconcile_failed", level=logging.WARNING, error=repr(exc))
            maintenance = asyncio.create_task(sessions.run_maintenance(), name="calls-maintenance")
            dispatcher = CampaignDispatcher(
                repos=services.repos,
                outbound=services.outbound,
                interval_seconds=settings.campaign_dispatch_interval_seconds,
                claim_lease_seconds=settings.campaign_claim_lease_seconds,
                reconcile_interval_seconds=settings.campaign_reconcile_interval_seconds,
            )
            after.add_on_final(dispatcher.on_final)
            dispatcher.add_on_completed(_wake_on_completed(webhooks))
            app.state.campaign_dispatcher = dispatcher
            if settings.campaign_dispatch_enabled:
                dispatcher.start()
            # Move everything built at start-up out of the collector's way: with hundreds of
            # calls live, a full collection otherwise pauses the loop for 10-20 ms.
            gc.collect()
            gc.freeze()
            log_event(_log, "server.started", database=db.dialect_name)
            yield
        finally:
            if dispatcher is not None:
                await dispatcher.aclose()
            if maintenance is not None:
                maintenance.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await maintenance
            if sessions is not None:
                await sessions.shutdown()
            if webhooks is not None:
                await webhooks.stop()
            if client is not None:
                await client.close()
            aclose = getattr(dialer, "aclose", None)
            if close_dialer and aclose is not None:
                await aclose()
            await db.dispose()

    def current_sessions() -> CallSessions:
        sessions: CallSessions = app.state.sessions
        return sessions

    app = Starlette(
        routes=[*api_routes(), *carrier_routes(settings, current_sessions), *extra_routes],
        middleware=[
            Middleware(
                RequestContextMiddleware,
                metrics=metrics,
                max_body_bytes=MAX_BODY_BYTES,
                body_limits={"/v1/calls/batch": campaign_api.BATCH_BODY_BYTES},
            )
        ],
        exception_handlers={HTTPException: _http_exception, ApiError: _api_error},
        lifespan=lifespan,
    )
    return app
