"""The campaign dispatcher: dials campaign recipients, on every node, through the outbound path.

Each node runs one :class:`CampaignDispatcher` in the app lifespan. A tick:

1. starts scheduled campaigns whose ``scheduled_at`` has come;
2. for every ``running`` campaign whose calling window is open now (its time zone, daylight
   saving included — :mod:`~nixflex_engine.calls.calling_window`), claims due recipients from
   the database, at most ``max_concurrent`` minus the campaign's calls in flight
   (:meth:`CampaignRepository.claim <nixflex_engine.store.campaigns.CampaignRepository.claim>`:
   the campaign row locked, recipients ``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite
   serialises writers), and dials each through
   :meth:`OutboundCallService.create <nixflex_engine.calls.outbound.OutboundCallService.create>`
   — the same validation, concurrency slot and record as ``POST /v1/calls/outbound``, with
   ``campaign_id`` and the recipient's variables, metadata (the campaign's, overridden key by
   key by the recipient's) and prompt (``prompt_override``, else the campaign's);
3. now and then, reconciles claims older than their lease (below).

A 429 ``concurrent_call_limit`` from the outbound path only means "wait": the claim is given
back and the account is skipped briefly (a call ending on this node wakes the dispatcher at
once). A carrier refusal (502) settles the attempt as ``failed``. Errors that concern the whole
campaign (agent deleted or inactive, number gone, credentials missing) give the claim back and
pause the campaign with ``last_error``; ``launch`` resumes it.

**Outcomes.** Every final call record reaches :meth:`CampaignDispatcher.on_final` (the
``AfterCallWork`` hook): ``no-answer``/``busy``/``voicemail`` (a completed call on which
voicemail was detected) are retried per the campaign's policy after ``retry_delay_minutes``
while attempts remain; anything else settles the recipient (``completed`` if the call connected,
``failed`` otherwise). When no recipient is left queued or in progress the campaign is
``completed`` (once, under the campaign row lock) and ``on_completed`` runs.

**Never twice for one attempt.** The attempt's ``call_ref`` is fixed at claim time and the call
row is written under it *before* the dial; ``calls.call_ref`` is unique, so only the process
that wrote the row dials. After a crash:

* claimed, no call row (died between claim and insert): the reconciler re-queues the recipient
  after ``claim_lease_seconds`` keeping the ``call_ref``; whoever dials it next writes the row
  under that same ref, and a stalled original that wakes up later collides with it and dials
  nothing;
* call row written, dial outcome unknown (died between insert and the carrier's answer): the
  recipient is *not* re-queued. The call lifecycle's reconciler finishes such a call as
  ``failed`` (or with the carrier's own status once the carrier reports it) and that outcome
  is applied like any other — the attempt is never redialed blindly;
* call final, outcome not applied (died after the call ended): the reconciler applies it.

The one window for two dials of the *same person* is therefore a retry after such an
unconfirmed attempt, which is a new attempt and only happens if the policy retries ``failed``
(it never does: only no-answer, busy and voicemail are retried).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from nixflex_engine.api.errors import ApiError
from nixflex_engine.calls.outbound import OutboundCallService
from nixflex_engine.log import get_logger, log_event
from nixflex_engine.store.campaigns import CampaignRecord, CampaignRepository, Claim
from nixflex_engine.store.repositories import CallRecord, DuplicateError, Repositories, utcnow

__all__ = ["CAMPAIGN_WIDE_ERRORS", "CampaignDispatcher", "OnCampaignCompleted", "call_outcome"]

_log = get_logger("nixflex_engine.campaigns")

#: Outbound errors that no recipient of the campaign could get past: pause, do not fail rows.
CAMPAIGN_WIDE_ERRORS = frozenset(
    {
        "agent_not_found",
        "agent_not_owned",
        "agent_no_phone",
        "from_number_not_owned",
        "twilio_credentials_missing",
        "agent_inactive",
    }
)
OnCampaignCompleted = Callable[[CampaignRecord], Awaitable[None]]


def call_outcome(record: CallRecord) -> str:
    """A final call as a campaign sees it: ``completed``, ``voicemail``, ``busy``,
    ``no-answer``, ``failed`` or ``canceled``."""
    if record.status == "completed":
        if record.voicemail_detected or record.ended_reason == "voicemail":
            return "voicemail"
        return "completed"
    return record.status


def default_node_id() -> str:
    return f"{socket.gethostname()[:40]}:{os.getpid()}"


class CampaignDispatcher:
    """Claims and dials campaign recipients on this node (see the module docstring)."""

    def __init__(
        self,
        *,
        repos: Repositories,
        outbound: OutboundCallService,
        node_id: str | None = None,
        interval_seconds: float = 0.5,
        claim_lease_seconds: float = 60.0,
        reconcile_interval_seconds: float = 10.0,
        claim_batch: int = 50,
        busy_backoff_seconds: float = 0.5,
        on_completed: OnCampaignCompleted | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.campaigns = CampaignRepository(repos.db)
        self._repos = repos
        self._outbound = outbound
        self.node_id = node_id or default_node_id()
        self._interval = interval_seconds
        self._lease = timedelta(seconds=claim_lease_seconds)
        self._reconcile_every = reconcile_interval_seconds
        self._batch = claim_batch
        self._backoff = busy_backoff_seconds
        self._on_completed: list[OnCampaignCompleted] = [on_completed] if on_completed else []
        self._clock = clock
        self._wake = asyncio.Event()
        self._dials: set[asyncio.Task[None]] = set()
        self._account_wait: dict[str, float] = {}
        self._last_reconcile = float("-inf")
        self._task: asyncio.Task[None] | None = None
        self.dialed = 0

    def add_on_completed(self, callback: OnCampaignCompleted) -> None:
        self._on_completed.append(callback)

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="campaign-dispatcher")

    def wake(self) -> None:
        """Run a tick now (a campaign was created or launched, a call ended)."""
        self._wake.set()

    async def aclose(self, timeout_s: float = 5.0) -> None:
        """Stop claiming; let dials already started finish (they are short)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._dials:
            _, pending = await asyncio.wait(set(self._dials), timeout=timeout_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)

    async def run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.tick()
            except Exception as exc:
                log_event(_log, "campaign.tick_failed", level=logging.WARNING, error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)

    async def idle(self) -> None:
        """Wait until the dials this node started have returned."""
        while self._dials:
            await asyncio.wait(set(self._dials))

    # --- one pass -----------------------------------------------------------------------

    async def tick(self) -> int:
        """One pass: promote, reconcile when due, claim and start dials. Returns how many
        recipients were claimed."""
        now = self._clock()
        await self.campaigns.promote_scheduled(now)
        if time.monotonic() - self._last_reconcile >= self._reconcile_every:
            self._last_reconcile = time.monotonic()
            await self.reconcile(now)
        claimed = 0
        mono = time.monotonic()
        for account_id in [a for a, until in self._account_wait.items() if until <= mono]:
            del self._account_wait[account_id]
        for campaign in await self.campaigns.running():
            if self._account_wait.get(campaign.account_id, 0.0) > mono:
                continue
            if not campaign.window.is_open(now):
                continue
            claims = await self.campaigns.claim(
                campaign.campaign_id, node=self.node_id, now=now, limit=self._batch
            )
            claimed += len(claims)
            for claim in claims:
                task = asyncio.create_task(self._dial(campaign, claim))
                self._dials.add(task)
                task.add_done_callback(self._dials.discard)
        return claimed

    def _body(self, campaign: CampaignRecord, claim: Claim) -> dict[str, Any]:
        metadata = None
        if campaign.metadata or claim.metadata:
            metadata = {**(campaign.metadata or {}), **(claim.metadata or {})}
        body: dict[str, Any] = {
            "agent_id": campaign.agent_id,
            "to_number": claim.phone_number,
            "dynamic_vars": claim.dynamic_vars,
            "campaign_id": campaign.campaign_id,
        }
        if campaign.from_number is not None:
            body["from_number"] = campaign.from_number
        if metadata is not None:
            body["metadata"] = metadata
        prompt = claim.prompt_override if claim.prompt_override is not None else campaign.prompt
        if prompt is not None:
            body["prompt"] = prompt
        return body

    async def _dial(self, campaign: CampaignRecord, claim: Claim) -> None:
        try:
            await self._outbound.create(
                campaign.account_id, self._body(campaign, claim), call_ref=claim.call_ref
            )
            self.dialed += 1
        except DuplicateError:
            # Another dispatcher already wrote (and so owns) this attempt's call.
            log_event(_log, "campaign.attempt_taken", call_id=claim.call_ref)
        except ApiError as error:
            await self._dial_refused(campaign, claim, error)
        except Exception as exc:
            # Unknown: whether a call row exists is for the reconciler to find out.
            log_event(
                _log,
                "campaign.dial_error",
                level=logging.ERROR,
                call_id=claim.call_ref,
                campaign_id=campaign.campaign_id,
                error=repr(exc),
            )

    async def _dial_refused(self, campaign: CampaignRecord, claim: Claim, error: ApiError) -> None:
        details = {"status": error.status, "code": error.code, "message": error.message}
        if error.status == 429:
            self._account_wait[campaign.account_id] = time.monotonic() + self._backoff
            await self.campaigns.release(claim)
            return
        if error.status == 502:
            # The call row exists, failed, slot released (the outbound path did it).
            call_id = str(error.details.get("call_id") or claim.call_ref)
            result = await self.campaigns.apply_outcome(
                claim.call_ref, call_id=call_id, outcome="failed"
            )
            await self._after_outcome(result.campaign_completed)
            return
        if error.code in CAMPAIGN_WIDE_ERRORS:
            await self.campaigns.release(claim)
            if await self.campaigns.pause_with_error(campaign.campaign_id, details):
                log_event(
                    _log,
                    "campaign.paused",
                    level=logging.WARNING,
                    campaign_id=campaign.campaign_id,
                    code=error.code,
                )
            return
        result = await self.campaigns.reject(claim, details)
        await self._after_outcome(result.campaign_completed)

    # --- outcomes -------------------------------------------------------------------------

    async def on_final(self, record: CallRecord) -> None:
        """The ``AfterCallWork`` hook: apply a finished campaign call's outcome."""
        if record.campaign_id is None:
            return
        self.wake()  # a slot is free
        outcome = call_outcome(record)
        result = await self.campaigns.apply_outcome(
            record.call_ref, call_id=record.call_id, outcome=outcome
        )
        if result.applied:
            log_event(
                _log,
                "campaign.outcome",
                call_id=record.call_id,
                campaign_id=record.campaign_id,
                outcome=outcome,
                state=result.state,
            )
        await self._after_outcome(result.campaign_completed)

    async def _after_outcome(self, completed: CampaignRecord | None) -> None:
        if completed is None:
            return
        log_event(_log, "campaign.completed", campaign_id=completed.campaign_id)
        for callback in self._on_completed:
            try:
                await callback(completed)
            except Exception as exc:
                log_event(
                    _log,
                    "campaign.on_completed_failed",
                    level=logging.ERROR,
                    campaign_id=completed.campaign_id,
                    error=repr(exc),
                )

    async def reconcile(self, now: datetime | None = None) -> int:
        """Settle claims older than the lease (see the module docstring); returns how many."""
        cutoff = (now or self._clock()) - self._lease
        settled = 0
        for stale in await self.campaigns.stale_claims(claimed_before=cutoff):
            try:
                if not stale.call_exists:
                    if await self.campaigns.requeue_unstarted(
                        stale.call_ref, claimed_before=cutoff
                    ):
                        settled += 1
                        log_event(_log, "campaign.claim_requeued", call_id=stale.call_ref)
                    continue
                record = await self._repos.calls.get_by_ref(stale.call_ref)
                if record is None or record.slot_held:
                    continue
                result = await self.campaigns.apply_outcome(
                    stale.call_ref, call_id=record.call_id, outcome=call_outcome(record)
                )
                if result.applied:
                    settled += 1
                await self._after_outcome(result.campaign_completed)
            except Exception as exc:  # one row must not stop the others
                log_event(
                    _log,
                    "campaign.reconcile_failed",
                    level=logging.WARNING,
                    call_id=stale.call_ref,
                    error=repr(exc),
                )
        if settled:
            log_event(_log, "campaign.reconciled", claims=settled)
        return settled
