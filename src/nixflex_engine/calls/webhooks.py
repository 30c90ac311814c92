"""Webhook delivery: the worker every node runs over the durable outbox.

The rows come from :mod:`nixflex_engine.store.webhooks` (queued with the final call record).
:class:`WebhookWorker` claims due rows with a lease, POSTs each one and writes the result with
the attempt's log row:

- **Body**: flat JSON, ``{"event": ..., <the call record as GET /v1/calls/{id} shows it>}``,
  fixed once (after post-call analysis) so every retry sends the same bytes.
- **Headers**: ``X-Nixflex-Signature: t=<unix>,v1=<hmac>`` (signed with the account's key
  secret, :func:`~nixflex_engine.calls.webhook_rules.sign_webhook`, a fresh ``t`` per attempt),
  ``X-Nixflex-Event``, ``X-Nixflex-Event-Id`` (one per call event, the same at every URL),
  ``X-Nixflex-Delivery`` (one per URL), ``User-Agent``.
- **Safety**: the host is resolved and every address checked (no private, loopback, link-local
  … unless ``allow_private_webhook_urls``); the request then goes to the checked address (the
  ``Host`` header and TLS name stay the URL's), so a second DNS answer cannot redirect it.
  Redirects are not followed.
- **Outcomes**: 2xx → ``delivered``; 410 → ``gone`` (no more attempts); an unsafe address →
  ``refused``; timeout (``webhook_timeout_seconds``, 10 s), connection error or any other
  status → ``retry`` after :func:`~nixflex_engine.calls.webhook_rules.next_retry_delay_s`
  (exponential backoff with jitter, about a day), then ``failed``.

A lease (``webhook_lease_seconds``) outlives any attempt, so two workers never hold the same
row; a worker that dies leaves its claims to expire and be taken again (at-least-once:
receivers dedupe on ``X-Nixflex-Event-Id`` or ``call_id`` + ``event``).

**Retention.** With ``retention_s`` > 0 (``webhook_retention_days``), the worker also deletes
finished deliveries (delivered, failed, gone, refused) that became final more than that long
ago, with their attempt logs: a pass every ``prune_interval_s`` (5 min, ±20 %, the first one
at a random point of the first interval so nodes started together spread out), each pass at
most ``prune_max_batches`` transactions of ``prune_batch_size`` rows with a pause between
them, so no pass holds the SQLite writer or PostgreSQL row locks for long. A pass that hit
its cap (a backlog, e.g. retention just switched on over a large table) is followed by the
next one after a second instead of the full interval. Pending rows are never pruned.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx

from nixflex_engine.calls.webhook_rules import (
    RETRY_DEADLINE_S,
    RETRY_SCHEDULE_S,
    SIGNATURE_HEADER,
    UnsafeWebhookURL,
    check_resolved_addresses,
    next_retry_delay_s,
    sign_webhook,
)
from nixflex_engine.crypto import Crypto, DecryptionError
from nixflex_engine.log import get_logger, log_event
from nixflex_engine.store.repositories import CallRecord, Repositories, utcnow
from nixflex_engine.store.webhooks import AttemptResult, ClaimedDelivery, event_for

__all__ = [
    "PRUNE_BATCH_SIZE",
    "PRUNE_INTERVAL_S",
    "PRUNE_MAX_BATCHES",
    "USER_AGENT",
    "RetryPolicy",
    "WebhookWorker",
    "webhook_body",
]

_log = get_logger("nixflex_engine.webhooks")

USER_AGENT = "nixflex-engine-webhooks/0.1"
_SECRET_CACHE_S = 5.0

#: Seconds between a worker's retention passes (±20 %).
PRUNE_INTERVAL_S = 300.0
#: Rows deleted per transaction by a retention pass.
PRUNE_BATCH_SIZE = 500
#: Transactions per pass at most; a pass that hits it comes back after ``_PRUNE_BACKLOG_S``.
PRUNE_MAX_BATCHES = 20
_PRUNE_PAUSE_S = 0.05
_PRUNE_BACKLOG_S = 1.0


def webhook_body(event: str, record_json: dict[str, Any]) -> str:
    """The delivery body: ``event`` first, then the call record fields, compact JSON."""
    return json.dumps(
        {"event": event, **record_json}, ensure_ascii=False, separators=(",", ":"), default=str
    )


@dataclass(slots=True, frozen=True)
class RetryPolicy:
    """When to try again. The defaults are the production schedule (api.md); benchmarks and
    tests pass short ones."""

    schedule_s: tuple[float, ...] = tuple(float(s) for s in RETRY_SCHEDULE_S)
    deadline_s: float = float(RETRY_DEADLINE_S)

    def delay_s(self, attempts_made: int, elapsed_s: float, rng: random.Random) -> float | None:
        return next_retry_delay_s(
            attempts_made,
            elapsed_s=elapsed_s,
            rng=rng,
            schedule_s=self.schedule_s,
            deadline_s=self.deadline_s,
        )


@dataclass(slots=True)
class _Result:
    outcome: str
    status_code: int | None = None
    error: str | None = None


@dataclass(slots=True)
class _Secrets:
    entries: dict[str, tuple[float, str | None]] = field(default_factory=dict)


class WebhookWorker:
    """Claims and delivers due webhooks; one per node, any number of nodes."""

    def __init__(
        self,
        *,
        repos: Repositories,
        crypto: Crypto,
        serialize: Callable[[CallRecord], dict[str, Any]],
        allow_private: bool = False,
        timeout_s: float = 10.0,
        lease_s: float = 60.0,
        max_concurrency: int = 16,
        poll_interval_s: float = 1.0,
        policy: RetryPolicy | None = None,
        worker_id: str | None = None,
        client: httpx.AsyncClient | None = None,
        rng: random.Random | None = None,
        retention_s: float = 0.0,
        prune_interval_s: float = PRUNE_INTERVAL_S,
        prune_batch_size: int = PRUNE_BATCH_SIZE,
        prune_max_batches: int = PRUNE_MAX_BATCHES,
        prune_pause_s: float = _PRUNE_PAUSE_S,
        prune_clock: Callable[[], datetime] = utcnow,
    ) -> None:
        if lease_s <= timeout_s:
            raise ValueError("the lease must outlast an attempt (lease_s > timeout_s)")
        if retention_s < 0:
            raise ValueError("retention_s must be >= 0 (0 keeps deliveries forever)")
        if prune_interval_s <= 0 or prune_batch_size < 1 or prune_max_batches < 1:
            raise ValueError("prune_interval_s, prune_batch_size and prune_max_batches must be > 0")
        self._repos = repos
        self._crypto = crypto
        self._serialize = serialize
        self._allow_private = allow_private
        self._timeout_s = timeout_s
        self._lease_s = lease_s
        self._max = max(1, max_concurrency)
        self._refill_at = max(1, self._max // 4)
        self._poll_s = poll_interval_s
        self._policy = policy or RetryPolicy()
        self.worker_id = worker_id or f"{socket.gethostname()[:40]}-{secrets.token_hex(4)}"
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s),
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(max_connections=self._max * 2, max_keepalive_connections=self._max),
        )
        self._rng = rng or random.Random()
        self._secrets = _Secrets()
        self._wake = asyncio.Event()
        self._stopping = False
        self._loop_task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._unwritten: list[tuple[AttemptResult, asyncio.Future[bool]]] = []
        self._writer: asyncio.Task[None] | None = None
        self.delivered = 0
        self.attempted = 0
        self._retention_s = retention_s
        self._prune_interval_s = prune_interval_s
        self._prune_batch = prune_batch_size
        self._prune_max_batches = prune_max_batches
        self._prune_pause_s = prune_pause_s
        self._prune_clock = prune_clock
        self._prune_backlog = False
        self._prune_task: asyncio.Task[None] | None = None
        self._prune_stop = asyncio.Event()
        #: Deliveries this worker's retention passes deleted, and the passes run.
        self.pruned = 0
        self.prune_passes = 0

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        if self._loop_task is None:
            self._stopping = False
            self._loop_task = asyncio.get_running_loop().create_task(self._run())
        if self._prune_task is None and self._retention_s > 0:
            self._prune_stop.clear()
            self._prune_task = asyncio.get_running_loop().create_task(self._prune_loop())

    def wake(self) -> None:
        """Look for due deliveries now (something was just queued or released)."""
        self._wake.set()

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop claiming; let attempts in flight finish (up to ``grace_s``, default the attempt
        timeout plus a second), then cancel the rest (their leases expire)."""
        self._stopping = True
        self._wake.set()
        self._prune_stop.set()
        if self._loop_task is not None:
            await asyncio.gather(self._loop_task, return_exceptions=True)
            self._loop_task = None
        if self._prune_task is not None:  # a pass stops after its current batch
            await asyncio.gather(self._prune_task, return_exceptions=True)
            self._prune_task = None
        if self._inflight:
            grace = self._timeout_s + 1.0 if grace_s is None else grace_s
            _, pending = await asyncio.wait(set(self._inflight), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
        if self._own_client:
            await self._client.aclose()

    async def on_call_final(self, record: CallRecord) -> None:
        """``AfterCallWork`` callback: the record is complete (analysis included) — fix the
        payload of its held deliveries and send them now."""
        events = await self._repos.webhooks.pending_events(record.id)
        if not events:
            return
        payloads = {event: self._body(event, record) for event in events}
        if await self._repos.webhooks.release(record.id, payloads, utcnow()):
            self.wake()

    # --- the loop -------------------------------------------------------------------------

    async def _run(self) -> None:
        busy = False  # the last claim took all it asked for: more are likely due
        while not self._stopping:
            free = self._max - len(self._inflight)
            claimed: list[ClaimedDelivery] = []
            if free > 0:
                try:
                    claimed = await self._claim(free, probe=not busy)
                except Exception as exc:
                    log_event(_log, "webhook.claim_failed", level=logging.WARNING, error=repr(exc))
            for item in claimed:
                task = asyncio.get_running_loop().create_task(self._deliver(item))
                self._inflight.add(task)
                task.add_done_callback(self._done)
            if free > 0:
                busy = len(claimed) == free
            if busy and len(self._inflight) < self._max:
                continue
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self._poll_s)
            except TimeoutError:
                pass

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        # Claim again once a quarter of the slots are free (one claim for many rows), or
        # at once when nothing is left in flight.
        if not self._inflight or self._max - len(self._inflight) >= self._refill_at:
            self._wake.set()

    async def _claim(self, limit: int, *, probe: bool = True) -> list[ClaimedDelivery]:
        """Claim up to ``limit`` due rows. ``probe`` first checks with a cheap read that
        something is due, so an idle node's polls cost no write transaction."""
        now = utcnow()
        if probe and not await self._repos.webhooks.any_due(now):
            return []
        return await self._repos.webhooks.claim(
            self.worker_id, limit=limit, lease_s=self._lease_s, now=now
        )

    async def run_once(self) -> int:
        """Claim what is due now and deliver it (for tools and tests); returns attempts made."""
        claimed = await self._claim(self._max)
        await asyncio.gather(*(self._deliver(item) for item in claimed))
        return len(claimed)

    # --- retention ------------------------------------------------------------------------

    async def prune(self) -> int:
        """One retention pass: delete finished deliveries that became final more than
        ``retention_s`` ago (by ``prune_clock``), in batches; returns how many this pass
        deleted (rows another node deleted first are not counted). Nothing with retention 0."""
        if self._retention_s <= 0:
            return 0
        before = self._prune_clock() - timedelta(seconds=self._retention_s)
        deleted, self._prune_backlog = 0, False
        for batch in range(self._prune_max_batches):
            if batch:
                if self._prune_stop.is_set():
                    break
                await asyncio.sleep(self._prune_pause_s)  # let other writers in
            n = await self._repos.webhooks.prune_finished(before, limit=self._prune_batch)
            deleted += n
            if n < self._prune_batch:
                break
        else:
            self._prune_backlog = True
        self.pruned += deleted
        self.prune_passes += 1
        if deleted:
            log_event(
                _log,
                "webhook.pruned",
                deleted=deleted,
                before=before.isoformat(),
                backlog=self._prune_backlog,
            )
        return deleted

    async def _prune_loop(self) -> None:
        delay = self._rng.uniform(0.0, self._prune_interval_s)
        while not self._prune_stop.is_set():
            try:
                await asyncio.wait_for(self._prune_stop.wait(), delay)
                return
            except TimeoutError:
                pass
            try:
                await self.prune()
            except Exception as exc:  # the database may be down: try again next time
                self._prune_backlog = False
                log_event(_log, "webhook.prune_failed", level=logging.WARNING, error=repr(exc))
            if self._prune_backlog:
                delay = min(_PRUNE_BACKLOG_S, self._prune_interval_s)
            else:
                delay = self._prune_interval_s * self._rng.uniform(0.8, 1.2)

    # --- one attempt ----------------------------------------------------------------------

    def _body(self, event: str, record: CallRecord) -> str:
        return webhook_body(event, self._serialize(record))

    async def _deliver(self, item: ClaimedDelivery) -> None:
        started_at = utcnow()
        t0 = time.perf_counter()
        payload = item.payload
        fresh_payload: str | None = None
        result = _Result("failed", error="call_not_found")
        try:
            if payload is None and item.call is not None:
                record: CallRecord = item.call
                payload = fresh_payload = self._body(
                    item.event or event_for(record.answered_at), record
                )
            if payload is not None:
                result = await self._attempt(item, payload.encode("utf-8"))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never lose the row to a bug in one attempt
            result = _Result("retry", error=f"internal: {type(exc).__name__}")
            log_event(_log, "webhook.attempt_crashed", level=logging.ERROR, exc_info=exc)
        duration_ms = (time.perf_counter() - t0) * 1000
        next_at: datetime | None = None
        if result.outcome == "retry":
            first = item.first_attempt_at or started_at
            elapsed = (started_at - first).total_seconds()
            delay = self._policy.delay_s(item.attempts + 1, elapsed, self._rng)
            if delay is None:
                result.outcome = "failed"
            else:
                next_at = started_at + timedelta(seconds=delay)
        self.attempted += 1
        if result.outcome == "delivered":
            self.delivered += 1
        log_event(
            _log,
            "webhook.attempt",
            level=logging.INFO if result.outcome == "delivered" else logging.WARNING,
            call_id=item.call_id,
            delivery_id=item.delivery_id,
            webhook_event=item.event,
            attempt=item.attempts + 1,
            host=urlsplit(item.url).hostname,
            status_code=result.status_code,
            error=result.error,
            outcome=result.outcome,
            duration_ms=round(duration_ms, 1),
            next_attempt_at=next_at.isoformat() if next_at else None,
        )
        attempt = AttemptResult(
            claimed=item,
            worker=self.worker_id,
            started_at=started_at,
            duration_ms=duration_ms,
            status_code=result.status_code,
            error=result.error,
            outcome=result.outcome,
            next_attempt_at=next_at,
            payload=fresh_payload,
        )
        try:
            held = await self._write(attempt)
        except Exception as exc:
            # The lease will expire and the row will be tried again.
            log_event(
                _log,
                "webhook.record_failed",
                level=logging.ERROR,
                delivery_id=item.delivery_id,
                error=repr(exc),
            )
            return
        if not held:
            log_event(
                _log,
                "webhook.lease_lost",
                level=logging.WARNING,
                delivery_id=item.delivery_id,
                call_id=item.call_id,
            )

    async def _write(self, attempt: AttemptResult) -> bool:
        """Write an attempt's result. Results that finish while a write is running go in the
        next write together: one transaction for many attempts under load."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._unwritten.append((attempt, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_batches())
        return await asyncio.shield(future)

    async def _write_batches(self) -> None:
        while self._unwritten:
            batch, self._unwritten = self._unwritten, []
            try:
                held = await self._repos.webhooks.record_attempts(
                    [attempt for attempt, _ in batch], utcnow()
                )
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), ok in zip(batch, held, strict=True):
                if not future.done():
                    future.set_result(ok)

    async def _attempt(self, item: ClaimedDelivery, body: bytes) -> _Result:
        secret = await self._secret(item.account_id)
        if secret is None:
            return _Result("retry", error="no_signing_key")
        try:
            async with asyncio.timeout(self._timeout_s):
                request = await self._request(item, body, secret)
                async with self._client.stream("POST", request.url, **request.kwargs) as resp:
                    status = resp.status_code
        except UnsafeWebhookURL as exc:
            return _Result("refused", error=f"unsafe_url: {exc.reason}"[:500])
        except (TimeoutError, httpx.TimeoutException):
            return _Result("retry", error="timeout")
        except (httpx.HTTPError, OSError) as exc:
            return _Result("retry", error=f"connection_error: {type(exc).__name__}")
        if 200 <= status < 300:
            return _Result("delivered", status_code=status)
        if status == 410:
            return _Result("gone", status_code=status)
        return _Result("retry", status_code=status, error=f"http_{status}")

    async def _request(self, item: ClaimedDelivery, body: bytes, secret: str) -> _Request:
        url = httpx.URL(item.url)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-Nixflex-Event": item.event,
            "X-Nixflex-Event-Id": item.event_id,
            "X-Nixflex-Delivery": item.delivery_id,
            SIGNATURE_HEADER: sign_webhook(secret, body, int(time.time())),
        }
        extensions: dict[str, Any] = {}
        if not self._allow_private:
            host = url.host
            port = url.port or (443 if url.scheme == "https" else 80)
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(
                    host, port, type=socket.SOCK_STREAM
                )
            except socket.gaierror as exc:
                raise httpx.ConnectError(f"cannot resolve host: {exc.strerror}") from exc
            addresses = [str(info[4][0]) for info in infos]
            check_resolved_addresses(addresses)
            # Connect to the address just checked; keep the URL's name for Host and TLS.
            headers["Host"] = url.netloc.decode("ascii")
            if url.scheme == "https":
                extensions["sni_hostname"] = host
            url = url.copy_with(host=addresses[0])
        return _Request(
            url=url, kwargs={"content": body, "headers": headers, "extensions": extensions}
        )

    async def _secret(self, account_id: str) -> str | None:
        now = time.monotonic()
        cached = self._secrets.entries.get(account_id)
        if cached is not None and now - cached[0] < _SECRET_CACHE_S:
            return cached[1]
        key = await self._repos.accounts.signing_key(account_id)
        secret: str | None = None
        if key is not None:
            try:
                secret = self._crypto.decrypt(key.secret_encrypted)
            except DecryptionError:
                log_event(_log, "webhook.secret_unreadable", level=logging.ERROR)
        if len(self._secrets.entries) > 10_000:
            self._secrets.entries.clear()
        self._secrets.entries[account_id] = (now, secret)
        return secret


@dataclass(slots=True)
class _Request:
    url: httpx.URL
    kwargs: dict[str, Any]
