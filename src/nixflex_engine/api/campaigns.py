"""Campaigns: ``POST/GET /v1/calls/batch``, ``GET/DELETE /v1/calls/batch/{campaign_id}``,
``POST /v1/calls/batch/{campaign_id}/launch`` and ``/pause``.

Creation validates everything before storing anything:

1. ``agent_id`` and ``recipients`` present (400 ``missing_field``); ``from_number`` E.164
   (400 ``invalid_phone_format``); every other campaign field's type and range (400
   ``invalid_request`` naming ``details.field``).
2. Every recipient, through the very validation ``POST /v1/calls/outbound`` runs on the call
   it will become (E.164, variables, metadata size, prompt length). Rows with the same number
   collapse into the first. Invalid rows: 400 ``invalid_recipients`` listing them, or with
   ``skip_invalid: true`` they are left out and reported in ``invalid``.
3. The agent, the number to call from and its carrier credentials, exactly as the outbound
   route checks them (404 ``agent_not_found``, 403 ``agent_not_owned``/``from_number_not_owned``,
   400 ``agent_no_phone``/``twilio_credentials_missing``/``agent_inactive``).

Then the campaign and its recipients are written in one transaction.

Statuses: ``schedule_type: "now"`` (the default) creates a ``running`` campaign;
``"schedule"`` with ``scheduled_at`` a ``scheduled`` one (running from that time), without it a
``draft``. ``launch`` runs a draft, scheduled or paused campaign now (a running one: no-op);
``pause`` stops claiming new recipients (calls in progress finish; ``launch`` resumes);
``DELETE`` cancels: queued recipients become ``canceled``, calls in progress finish and are not
retried. A campaign is ``completed`` once no recipient is queued or in progress. Anything else
answers 409 (``campaign_not_launchable`` / ``_pausable`` / ``_cancelable``).

Recipient fields: ``phone_number`` (alias ``phone``), ``dynamic_vars`` (alias ``variables``),
``metadata`` (merged over the campaign's ``metadata`` on each call, recipient keys winning),
``prompt_override`` (replaces the campaign's ``prompt`` for that call). Window:
``window_start_minutes``/``window_end_minutes`` (minutes after local midnight; end < start is
overnight; omit both for round the clock), ``window_days`` (``"mon"`` to ``"sun"``, full names, or
0-6 with 0 = Sunday), ``timezone`` (IANA, default UTC). ``max_concurrent`` defaults to the
account's limit. ``retry``: ``max_attempts`` (1-10 attempts in all; default 1 without a
``retry`` object, 3 with one), ``retry_delay_minutes`` (0-10080, fractions allowed; default
60), ``on`` (subset of ``no-answer``/``busy``/``voicemail``; default all three).

``GET /v1/calls/batch/{id}`` pages the recipients with ``limit``/``offset`` (``state`` filters):
each with its ``attempts``, ``call_ids`` and per-attempt ``calls`` (call id, call status, outcome).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from starlette.routing import Route

from nixflex_engine.api.agents import iso
from nixflex_engine.api.errors import ApiError
from nixflex_engine.api.fields import (
    _time_zones,
    check_bool,
    check_enum,
    check_int,
    check_string,
    is_e164,
    parse_limit_offset,
    parse_timestamp,
    reject_unknown,
)
from nixflex_engine.api.routing import ApiCall, Reply, endpoint
from nixflex_engine.calls.calling_window import DAY_NAMES, CallingWindow
from nixflex_engine.calls.outbound import PROMPT_MAX, validate_outbound
from nixflex_engine.store.campaigns import (
    CAMPAIGN_STATUSES,
    RECIPIENT_STATES,
    CampaignRecord,
    CampaignRepository,
    NewCampaign,
    NewRecipient,
    RecipientView,
    new_campaign_id,
)
from nixflex_engine.store.repositories import utcnow

__all__ = [
    "CAMPAIGN_FIELDS",
    "MAX_RECIPIENTS",
    "RECIPIENT_FIELDS",
    "RETRY_OUTCOMES",
    "campaign_json",
    "parse_campaign",
    "routes",
]

MAX_RECIPIENTS = 10_000
MAX_CONCURRENT_LIMIT = 1_000
MAX_ATTEMPTS_LIMIT = 10
MAX_RETRY_DELAY_MINUTES = 7 * 24 * 60
#: The request body cap for POST /v1/calls/batch (10,000 recipients with variables).
BATCH_BODY_BYTES = 16 * 1024 * 1024
RETRY_OUTCOMES = ("no-answer", "busy", "voicemail")
#: Invalid rows listed in an error or a campaign body (``invalid_count`` has the total).
INVALID_SHOWN = 100
CAMPAIGN_FIELDS = frozenset(
    {
        "agent_id",
        "from_number",
        "name",
        "prompt",
        "recipients",
        "schedule_type",
        "scheduled_at",
        "window_start_minutes",
        "window_end_minutes",
        "window_days",
        "timezone",
        "max_concurrent",
        "retry",
        "skip_invalid",
        "metadata",
    }
)
RECIPIENT_FIELDS = frozenset(
    {"phone_number", "phone", "dynamic_vars", "variables", "metadata", "prompt_override"}
)
_RETRY_FIELDS = frozenset({"max_attempts", "retry_delay_minutes", "on"})
#: JavaScript's Date.getDay() numbering for integer days (0 = Sunday).
_INT_DAYS = {0: 7, 1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6}
_LONG_DAYS = {
    "monday": 1,
    "tuesday": 2,
    "wednesday": 3,
    "thursday": 4,
    "friday": 5,
    "saturday": 6,
    "sunday": 7,
}
#: A syntactically valid campaign id for validating recipients before the real one exists.
_PLACEHOLDER_ID = "camp_" + "0" * 16


# --------------------------------------------------------------------------------------------
# parsing


class ParsedCampaign:
    """A validated creation request (steps 1-2), before the ownership checks."""

    __slots__ = (
        "agent_id",
        "duplicates",
        "from_number",
        "invalid",
        "max_concurrent",
        "metadata",
        "name",
        "prompt",
        "recipients",
        "retry_delay_seconds",
        "retry_max_attempts",
        "retry_on",
        "schedule_type",
        "scheduled_at",
        "window",
    )

    def __init__(
        self,
        *,
        agent_id: str,
        from_number: str | None,
        name: str,
        prompt: str | None,
        recipients: list[NewRecipient],
        invalid: list[dict[str, Any]],
        duplicates: int,
        schedule_type: str,
        scheduled_at: datetime | None,
        window: CallingWindow,
        max_concurrent: int | None,
        retry_max_attempts: int,
        retry_delay_seconds: float,
        retry_on: tuple[str, ...],
        metadata: dict[str, Any] | None,
    ) -> None:
        self.agent_id = agent_id
        self.from_number = from_number
        self.name = name
        self.prompt = prompt
        self.recipients = recipients
        self.invalid = invalid
        self.duplicates = duplicates
        self.schedule_type = schedule_type
        self.scheduled_at = scheduled_at
        self.window = window
        self.max_concurrent = max_concurrent
        self.retry_max_attempts = retry_max_attempts
        self.retry_delay_seconds = retry_delay_seconds
        self.retry_on = retry_on
        self.metadata = metadata


def _present(value: object) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip())


def _days(value: object) -> frozenset[int]:
    if not isinstance(value, list) or not value:
        raise ApiError.invalid(
            "window_days",
            "'window_days' must be a non-empty list of days ('mon'...'sun', or 0-6 with "
            "0 = Sunday).",
        )
    days: set[int] = set()
    for item in value:
        day: int | None = None
        if isinstance(item, bool):
            day = None
        elif isinstance(item, int):
            day = _INT_DAYS.get(item)
        elif isinstance(item, str):
            key = item.strip().lower()
            day = DAY_NAMES.get(key) or _LONG_DAYS.get(key)
        if day is None:
            raise ApiError.invalid(
                "window_days",
                "'window_days' entries must be day names ('mon'...'sun') or 0-6 (0 = Sunday).",
                value=str(item)[:20],
            )
        days.add(day)
    return frozenset(days)


def _window(body: Mapping[str, Any]) -> CallingWindow:
    start_raw, end_raw = body.get("window_start_minutes"), body.get("window_end_minutes")
    if (start_raw is None) != (end_raw is None):
        missing = "window_end_minutes" if end_raw is None else "window_start_minutes"
        raise ApiError(
            400,
            "missing_field",
            "Give both 'window_start_minutes' and 'window_end_minutes', or neither.",
            {"field": missing},
        )
    start = (
        0
        if start_raw is None
        else check_int("window_start_minutes", start_raw, minimum=0, maximum=1439)
    )
    end = (
        1440
        if end_raw is None
        else check_int("window_end_minutes", end_raw, minimum=1, maximum=1440)
    )
    if start == end:
        raise ApiError.invalid(
            "window_end_minutes",
            "The calling window is empty (start == end); omit both for round-the-clock calling.",
        )
    days = _days(body["window_days"]) if body.get("window_days") is not None else None
    timezone = "UTC"
    if body.get("timezone") is not None:
        text = check_string("timezone", body["timezone"], max_length=64)
        if text not in _time_zones():
            raise ApiError.invalid(
                "timezone", "'timezone' must be an IANA time zone such as 'Europe/London'."
            )
        assert text is not None
        timezone = text
    if days is None:
        return CallingWindow(start, end, timezone=timezone)
    return CallingWindow(start, end, days, timezone)


def _retry(value: object) -> tuple[int, float, tuple[str, ...]]:
    if value is None:
        return 1, 3600.0, RETRY_OUTCOMES
    if not isinstance(value, dict):
        raise ApiError.invalid("retry", "'retry' must be an object.", expected="object")
    unknown = sorted(k for k in value if k not in _RETRY_FIELDS)
    if unknown:
        raise ApiError.invalid(
            f"retry.{unknown[0][:50]}",
            f"Unknown retry field(s): {', '.join(k[:50] for k in unknown[:10])}.",
            unknown_fields=[k[:50] for k in unknown[:10]],
        )
    attempts = 3
    if value.get("max_attempts") is not None:
        attempts = check_int(
            "retry.max_attempts", value["max_attempts"], minimum=1, maximum=MAX_ATTEMPTS_LIMIT
        )
    delay_minutes: float = 60.0
    raw_delay = value.get("retry_delay_minutes")
    if raw_delay is not None:
        if (
            isinstance(raw_delay, bool)
            or not isinstance(raw_delay, int | float)
            or not math.isfinite(raw_delay)
            or not 0 <= raw_delay <= MAX_RETRY_DELAY_MINUTES
        ):
            raise ApiError.invalid(
                "retry.retry_delay_minutes",
                f"'retry.retry_delay_minutes' must be a number from 0 to "
                f"{MAX_RETRY_DELAY_MINUTES}.",
                minimum=0,
                maximum=MAX_RETRY_DELAY_MINUTES,
            )
        delay_minutes = float(raw_delay)
    on: tuple[str, ...] = RETRY_OUTCOMES
    if value.get("on") is not None:
        raw_on = value["on"]
        if not isinstance(raw_on, list):
            raise ApiError.invalid(
                "retry.on", "'retry.on' must be a list.", allowed=list(RETRY_OUTCOMES)
            )
        on = tuple(dict.fromkeys(check_enum("retry.on", item, RETRY_OUTCOMES) for item in raw_on))
    return attempts, delay_minutes * 60.0, on


def _row_error(index: int, row: object, error: ApiError) -> dict[str, Any]:
    field = error.details.get("field")
    if field == "to_number":
        field = "phone_number"
    phone = None
    if isinstance(row, dict):
        raw = row.get("phone_number", row.get("phone"))
        phone = raw[:32] if isinstance(raw, str) else None
    report: dict[str, Any] = {
        "index": index,
        "phone_number": phone,
        "code": error.code,
        "message": error.message.replace("'to_number'", "'phone_number'"),
    }
    if field is not None:
        report["field"] = str(field)[:100]
    return report


def _recipient(
    index: int,
    row: object,
    *,
    agent_id: str,
    from_number: str | None,
    prompt: str | None,
    campaign_metadata: dict[str, Any] | None,
) -> NewRecipient:
    if not isinstance(row, dict):
        raise ApiError.invalid("recipients", "Each recipient must be an object.")
    reject_unknown(row, RECIPIENT_FIELDS)
    for alias, name in (("phone", "phone_number"), ("variables", "dynamic_vars")):
        if row.get(alias) is not None and row.get(name) is not None:
            raise ApiError.invalid(alias, f"Send '{name}' or its alias '{alias}', not both.")
    phone = row.get("phone_number", row.get("phone"))
    variables = row.get("dynamic_vars", row.get("variables"))
    metadata = row.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise ApiError.invalid("metadata", "'metadata' must be an object.", expected="object")
    merged = (
        {**(campaign_metadata or {}), **(metadata or {})}
        if (campaign_metadata or metadata)
        else None
    )
    override = row.get("prompt_override")
    if override is not None and not isinstance(override, str):
        raise ApiError.invalid("prompt_override", "'prompt_override' must be a string.")
    # The call this row becomes, validated exactly as POST /v1/calls/outbound would.
    req = validate_outbound(
        {
            "agent_id": agent_id,
            "to_number": phone,
            "from_number": from_number,
            # under the name the row used, so an error names the row's own field
            ("variables" if "variables" in row else "dynamic_vars"): variables,
            "metadata": merged,
            "campaign_id": _PLACEHOLDER_ID,
            "prompt": override if override is not None else prompt,
        }
    )
    return NewRecipient(
        position=index,
        phone_number=req.to_number,
        dynamic_vars=req.dynamic_vars,
        metadata=metadata,
        prompt_override=override,
    )


def parse_campaign(body: Mapping[str, Any], *, now: datetime) -> ParsedCampaign:
    """Steps 1 and 2 of the module docstring (no I/O)."""
    for name in ("agent_id", "recipients"):
        if not _present(body.get(name)):
            raise ApiError(
                400,
                "missing_field",
                f"'{name}' is required and must not be empty.",
                {"field": name},
            )
    from_number = body.get("from_number")
    if from_number is not None and not is_e164(from_number):
        raise ApiError(
            400,
            "invalid_phone_format",
            "'from_number' must be an E.164 number such as +447386172392.",
            {"field": "from_number"},
        )
    reject_unknown(body, CAMPAIGN_FIELDS)
    agent_id = check_string("agent_id", body["agent_id"], max_length=64)
    assert agent_id is not None
    name = check_string("name", body.get("name"), max_length=200, nullable=True) or (
        f"Campaign {now.strftime('%Y-%m-%d %H:%M')} UTC"
    )
    prompt = body.get("prompt")
    if prompt is not None:
        if not isinstance(prompt, str):
            raise ApiError.invalid("prompt", "'prompt' must be a string.", expected="string")
        if len(prompt) > PROMPT_MAX:
            raise ApiError(
                400,
                "prompt_too_long",
                f"'prompt' is longer than {PROMPT_MAX} characters.",
                {"field": "prompt", "max_length": PROMPT_MAX, "length": len(prompt)},
            )
    schedule_type = check_enum(
        "schedule_type", body.get("schedule_type", "now") or "now", ("now", "schedule")
    )
    scheduled_at = None
    if body.get("scheduled_at") is not None:
        if schedule_type != "schedule":
            raise ApiError.invalid("scheduled_at", "'scheduled_at' needs schedule_type 'schedule'.")
        raw = body["scheduled_at"]
        if not isinstance(raw, str):
            raise ApiError.invalid("scheduled_at", "'scheduled_at' must be an ISO-8601 string.")
        scheduled_at = parse_timestamp("scheduled_at", raw)
    window = _window(body)
    max_concurrent = None
    if body.get("max_concurrent") is not None:
        max_concurrent = check_int(
            "max_concurrent", body["max_concurrent"], minimum=1, maximum=MAX_CONCURRENT_LIMIT
        )
    retry_max_attempts, retry_delay_seconds, retry_on = _retry(body.get("retry"))
    skip_invalid = False
    if body.get("skip_invalid") is not None:
        skip_invalid = check_bool("skip_invalid", body["skip_invalid"])
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise ApiError.invalid("metadata", "'metadata' must be an object.", expected="object")
    rows = body["recipients"]
    if not isinstance(rows, list):
        raise ApiError.invalid("recipients", "'recipients' must be a list.", expected="array")
    if len(rows) > MAX_RECIPIENTS:
        raise ApiError.invalid(
            "recipients",
            f"A campaign takes at most {MAX_RECIPIENTS} recipients.",
            max_items=MAX_RECIPIENTS,
            count=len(rows),
        )
    recipients: list[NewRecipient] = []
    invalid: list[dict[str, Any]] = []
    seen: set[str] = set()
    duplicates = 0
    for index, row in enumerate(rows):
        try:
            recipient = _recipient(
                index,
                row,
                agent_id=agent_id,
                from_number=from_number,
                prompt=prompt,
                campaign_metadata=metadata,
            )
        except ApiError as error:
            invalid.append(_row_error(index, row, error))
            continue
        if recipient.phone_number in seen:
            duplicates += 1
            continue
        seen.add(recipient.phone_number)
        recipients.append(recipient)
    if invalid and not skip_invalid:
        raise ApiError(
            400,
            "invalid_recipients",
            f"{len(invalid)} recipient(s) are invalid; fix them or send skip_invalid: true.",
            {
                "field": "recipients",
                "invalid_count": len(invalid),
                "invalid": invalid[:INVALID_SHOWN],
            },
        )
    if not recipients:
        raise ApiError(
            400,
            "no_valid_recipients",
            "No valid recipient is left to call.",
            {
                "field": "recipients",
                "invalid_count": len(invalid),
                "invalid": invalid[:INVALID_SHOWN],
            },
        )
    return ParsedCampaign(
        agent_id=agent_id,
        from_number=from_number,
        name=name,
        prompt=prompt,
        recipients=recipients,
        invalid=invalid,
        duplicates=duplicates,
        schedule_type=schedule_type,
        scheduled_at=scheduled_at,
        window=window,
        max_concurrent=max_concurrent,
        retry_max_attempts=retry_max_attempts,
        retry_delay_seconds=retry_delay_seconds,
        retry_on=retry_on,
        metadata=metadata,
    )


# --------------------------------------------------------------------------------------------
# JSON


def _minutes(seconds: float) -> float | int:
    minutes = seconds / 60.0
    return int(minutes) if minutes.is_integer() else round(minutes, 4)


def campaign_json(
    record: CampaignRecord, counts: Mapping[str, int], *, now: datetime
) -> dict[str, Any]:
    """The public campaign (without its recipients)."""
    window = record.window
    in_window = window.is_open(now)
    next_open = None
    if record.status in ("draft", "scheduled", "running", "paused") and not in_window:
        next_open = iso(window.next_open(now))
    return {
        "campaign_id": record.campaign_id,
        "name": record.name,
        "agent_id": record.agent_id,
        "from_number": record.from_number,
        "prompt": record.prompt,
        "status": record.status,
        "schedule_type": record.schedule_type,
        "scheduled_at": iso(record.scheduled_at),
        **window.describe(),
        "in_window": in_window,
        "next_window_at": next_open,
        "max_concurrent": record.max_concurrent,
        "retry": {
            "max_attempts": record.retry_max_attempts,
            "retry_delay_minutes": _minutes(record.retry_delay_seconds),
            "on": list(record.retry_on),
        },
        "metadata": record.metadata,
        "recipients_total": record.recipients_total,
        "counts": {state: int(counts.get(state, 0)) for state in RECIPIENT_STATES},
        # the rows skipped at creation (skip_invalid): the first 100, and how many in all
        "invalid": record.invalid_recipients[:INVALID_SHOWN],
        "invalid_count": len(record.invalid_recipients),
        "last_error": record.last_error,
        "created_at": iso(record.created_at),
        "updated_at": iso(record.updated_at),
        "launched_at": iso(record.launched_at),
        "completed_at": iso(record.completed_at),
        "canceled_at": iso(record.canceled_at),
    }


def recipient_json(view: RecipientView) -> dict[str, Any]:
    return {
        "index": view.position,
        "phone_number": view.phone_number,
        "state": view.state,
        "attempts": view.attempts,
        "next_attempt_at": iso(view.next_attempt_at),
        "last_outcome": view.last_outcome,
        "last_call_id": view.last_call_id,
        "last_error": view.last_error,
        "call_ids": [a.call_id for a in view.calls if a.call_id is not None],
        "calls": [
            {
                "attempt": a.attempt,
                "call_id": a.call_id,
                "status": a.call_status,
                "outcome": a.outcome,
                "started_at": iso(a.created_at),
                "ended_at": iso(a.ended_at),
            }
            for a in view.calls
        ],
        "dynamic_vars": view.dynamic_vars,
        "metadata": view.metadata,
        "prompt_override": view.prompt_override,
    }


# --------------------------------------------------------------------------------------------
# routes


def _repo(call: ApiCall) -> CampaignRepository:
    return CampaignRepository(call.services.repos.db)


def _wake(call: ApiCall) -> None:
    dispatcher = getattr(call.request.app.state, "campaign_dispatcher", None)
    if dispatcher is not None:
        dispatcher.wake()


def _not_found(campaign_id: str) -> ApiError:
    return ApiError(
        404, "campaign_not_found", "No campaign with this id.", {"campaign_id": campaign_id[:100]}
    )


async def _one(call: ApiCall, record: CampaignRecord) -> dict[str, Any]:
    counts = await _repo(call).counts([record.campaign_id])
    return campaign_json(record, counts[record.campaign_id], now=utcnow())


async def create_campaign(call: ApiCall) -> Reply:
    body = await call.json_object()
    now = utcnow()
    parsed = parse_campaign(body, now=now)
    services = call.services
    account_id = call.account_id
    await services.outbound.check_sender(account_id, parsed.agent_id, parsed.from_number)
    max_concurrent = parsed.max_concurrent
    if max_concurrent is None:
        account = await services.repos.accounts.get(account_id)
        limit = account.max_concurrent_calls if account else None
        max_concurrent = limit or services.settings.default_max_concurrent_calls
    if parsed.schedule_type == "now":
        status = "running"
    elif parsed.scheduled_at is None:
        status = "draft"
    else:
        status = "scheduled"
    record = await _repo(call).create(
        NewCampaign(
            campaign_id=new_campaign_id(),
            account_id=account_id,
            agent_id=parsed.agent_id,
            from_number=parsed.from_number,
            name=parsed.name,
            prompt=parsed.prompt,
            status=status,
            schedule_type=parsed.schedule_type,
            scheduled_at=parsed.scheduled_at,
            window=parsed.window,
            max_concurrent=max_concurrent,
            retry_max_attempts=parsed.retry_max_attempts,
            retry_delay_seconds=parsed.retry_delay_seconds,
            retry_on=parsed.retry_on,
            metadata=parsed.metadata,
            invalid_recipients=parsed.invalid,
        ),
        parsed.recipients,
    )
    _wake(call)
    counts = {"queued": len(parsed.recipients)}
    return Reply(
        201,
        {**campaign_json(record, counts, now=now), "duplicates_collapsed": parsed.duplicates},
    )


async def list_campaigns(call: ApiCall) -> Reply:
    query = call.query
    limit, offset = parse_limit_offset(query)
    status = query.get("status") or None
    if status is not None:
        check_enum("status", status, CAMPAIGN_STATUSES)
    repo = _repo(call)
    records, count = await repo.list_page(
        call.account_id, status=status, limit=limit, offset=offset
    )
    counts = await repo.counts([r.campaign_id for r in records])
    now = utcnow()
    return Reply(
        200,
        {
            "campaigns": [campaign_json(r, counts[r.campaign_id], now=now) for r in records],
            "count": count,
            "limit": limit,
            "offset": offset,
        },
    )


async def get_campaign(call: ApiCall) -> Reply:
    campaign_id = call.path_param("campaign_id")
    query = call.query
    limit, offset = parse_limit_offset(query)
    state = query.get("state") or None
    if state is not None:
        check_enum("state", state, RECIPIENT_STATES)
    repo = _repo(call)
    record = await repo.get(campaign_id, call.account_id)
    if record is None:
        raise _not_found(campaign_id)
    views, total = await repo.recipients_page(campaign_id, state=state, limit=limit, offset=offset)
    body = await _one(call, record)
    body["recipients"] = [recipient_json(v) for v in views]
    body["recipients_count"] = total
    body["limit"] = limit
    body["offset"] = offset
    return Reply(200, body)


async def _transition(call: ApiCall, action: str, code: str, verb: str) -> Reply:
    campaign_id = call.path_param("campaign_id")
    record, applied = await _repo(call).transition(campaign_id, call.account_id, action)
    if record is None:
        raise _not_found(campaign_id)
    if not applied:
        raise ApiError(
            409,
            code,
            f"A {record.status} campaign cannot be {verb}.",
            {"campaign_id": campaign_id, "status": record.status},
        )
    _wake(call)
    return Reply(200, await _one(call, record))


async def launch_campaign(call: ApiCall) -> Reply:
    return await _transition(call, "launch", "campaign_not_launchable", "launched")


async def pause_campaign(call: ApiCall) -> Reply:
    return await _transition(call, "pause", "campaign_not_pausable", "paused")


async def cancel_campaign(call: ApiCall) -> Reply:
    return await _transition(call, "cancel", "campaign_not_cancelable", "canceled")


def routes() -> list[Route]:
    """Before ``calls.routes()``: ``/v1/calls/{call_id}`` would match ``/v1/calls/batch``."""
    return [
        Route("/v1/calls/batch", endpoint(create_campaign), methods=["POST"]),
        Route("/v1/calls/batch", endpoint(list_campaigns), methods=["GET"]),
        Route("/v1/calls/batch/{campaign_id}", endpoint(get_campaign), methods=["GET"]),
        Route("/v1/calls/batch/{campaign_id}", endpoint(cancel_campaign), methods=["DELETE"]),
        Route("/v1/calls/batch/{campaign_id}/launch", endpoint(launch_campaign), methods=["POST"]),
        Route("/v1/calls/batch/{campaign_id}/pause", endpoint(pause_campaign), methods=["POST"]),
    ]
