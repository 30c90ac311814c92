"""Calls: ``POST /v1/calls/outbound``, ``GET /v1/calls``, ``GET/DELETE /v1/calls/{call_id}``,
``GET /v1/calls/{call_id}/recording`` (HTTP Range requests) and
``GET /v1/calls/{call_id}/webhooks`` (deliveries and their attempts).

The outbound route only parses JSON and hands the object to
:class:`~nixflex_engine.calls.outbound.OutboundCallService`, which owns the validation order.
"""

from __future__ import annotations

from email.utils import formatdate
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from nixflex_engine.api.agents import iso
from nixflex_engine.api.errors import ApiError, error_response
from nixflex_engine.api.fields import (
    check_enum,
    is_e164,
    parse_limit_offset,
    parse_timestamp,
)
from nixflex_engine.api.routing import ApiCall, Reply, authenticate, endpoint
from nixflex_engine.calls.recordings import RangeNotSatisfiable, parse_byte_range
from nixflex_engine.config import Settings
from nixflex_engine.log import get_logger, log_event
from nixflex_engine.store.repositories import (
    ACTIVE_CALL_STATUSES,
    FINAL_CALL_STATUSES,
    CallFilters,
    CallInProgressError,
    CallRecord,
)

__all__ = ["call_json", "routes"]

_log = get_logger(__name__)
CALL_STATUSES = (*ACTIVE_CALL_STATUSES, *FINAL_CALL_STATUSES)


def call_json(call: CallRecord, settings: Settings) -> dict[str, Any]:
    """The public call record (api.md "Call record")."""
    recording_url = (
        f"{settings.public_base_url}/v1/calls/{call.call_id}/recording"
        if call.recording_path
        else None
    )
    return {
        "call_id": call.call_id,
        "agent_id": call.agent_id,
        "campaign_id": call.campaign_id,
        "direction": call.direction,
        "status": call.status,
        "from_number": call.from_number,
        "to_number": call.to_number,
        "metadata": call.metadata,
        "dynamic_vars": call.dynamic_vars,
        "prompt": call.prompt,
        "voicemail_action": call.voicemail_action,
        "voicemail_message": call.voicemail_message,
        "created_at": iso(call.created_at),
        "answered_at": iso(call.answered_at),
        "ended_at": iso(call.ended_at),
        "duration_seconds": call.duration_seconds,
        "ended_reason": call.ended_reason,
        "voicemail_detected": call.voicemail_detected,
        "voicemail_detection_method": call.voicemail_detection_method,
        "amd_result": call.amd_result,
        "transcript": call.transcript,
        "recording_url": recording_url,
        "recording_duration_seconds": call.recording_duration_seconds,
        "call_summary": call.call_summary,
        "caller_sentiment": call.caller_sentiment,
        "call_successful": call.call_successful,
        "extracted_data": call.extracted_data,
        "latency": call.latency,
        "twilio_error": call.twilio_error,
    }


async def create_outbound(call: ApiCall) -> Reply:
    body = await call.json_object()
    result = await call.services.outbound.create(call.account_id, body)
    return Reply(201, result)


async def list_calls(call: ApiCall) -> Reply:
    query = call.query
    limit, offset = parse_limit_offset(query)
    status = query.get("status") or None
    if status is not None:
        check_enum("status", status, CALL_STATUSES)
    to_number = query.get("to_number") or None
    if to_number is not None and not is_e164(to_number):
        raise ApiError(
            400,
            "invalid_phone_format",
            "'to_number' must be E.164 (URL-encode the + as %2B).",
            {"field": "to_number"},
        )
    since = parse_timestamp("since", query["since"]) if query.get("since") else None
    until = parse_timestamp("until", query["until"]) if query.get("until") else None
    filters = CallFilters(
        agent_id=query.get("agent_id") or None,
        campaign_id=query.get("campaign_id") or None,
        status=status,
        to_number=to_number,
        since=since,
        until=until,
    )
    records, count = await call.services.repos.calls.list_page(
        call.account_id, filters, limit=limit, offset=offset
    )
    settings = call.services.settings
    return Reply(
        200,
        {
            "calls": [call_json(r, settings) for r in records],
            "count": count,
            "limit": limit,
            "offset": offset,
        },
    )


def _not_found(call_id: str) -> ApiError:
    return ApiError(404, "call_not_found", "No call with this id.", {"call_id": call_id[:100]})


async def get_call(call: ApiCall) -> Reply:
    call_id = call.path_param("call_id")
    record = await call.services.repos.calls.get(call_id, call.account_id)
    if record is None:
        raise _not_found(call_id)
    return Reply(200, call_json(record, call.services.settings))


async def delete_call(call: ApiCall) -> Reply:
    call_id = call.path_param("call_id")
    try:
        record = await call.services.repos.calls.delete(call_id, call.account_id)
    except CallInProgressError as exc:
        raise ApiError(
            409,
            "call_in_progress",
            "The call is still in progress; delete it after it ends.",
            {"call_id": call_id},
        ) from exc
    if record is None:
        raise _not_found(call_id)
    if record.recording_path:
        try:
            await call.services.recordings.delete(record.call_id)
        except OSError as exc:
            log_event(_log, "calls.recording_delete_failed", call_id=call_id, error=str(exc))
    return Reply(200, {"call_id": call_id, "deleted": True})


async def list_webhooks(call: ApiCall) -> Reply:
    """The call's webhook deliveries, each with every attempt (oldest first)."""
    call_id = call.path_param("call_id")
    limit, offset = parse_limit_offset(call.query)
    repos = call.services.repos
    if await repos.calls.get(call_id, call.account_id) is None:
        raise _not_found(call_id)
    deliveries, count = await repos.webhooks.list_for_call(
        call_id, call.account_id, limit=limit, offset=offset
    )
    return Reply(
        200,
        {
            "webhooks": [
                {
                    "delivery_id": d.delivery_id,
                    "event_id": d.event_id,
                    "call_id": d.call_id,
                    "event": d.event,
                    "target": d.target,
                    "url": d.url,
                    "status": d.status,
                    "attempts": d.attempts,
                    "created_at": iso(d.created_at),
                    "next_attempt_at": iso(d.next_attempt_at),
                    "delivered_at": iso(d.delivered_at),
                    "last_status_code": d.last_status_code,
                    "last_error": d.last_error,
                    "attempt_log": [
                        {
                            "attempt": a.attempt,
                            "started_at": iso(a.started_at),
                            "duration_ms": a.duration_ms,
                            "status_code": a.status_code,
                            "error": a.error,
                            "outcome": a.outcome,
                            "next_attempt_at": iso(a.next_attempt_at),
                        }
                        for a in d.attempt_log
                    ],
                }
                for d in deliveries
            ],
            "count": count,
            "limit": limit,
            "offset": offset,
        },
    )


async def get_recording(request: Request) -> Response:
    """The call's WAV (authenticated; not JSON, so it bypasses the JSON reply path)."""
    services = request.app.state.services
    try:
        auth = await authenticate(request, services)
        decision = services.rate_limiter.hit(auth.key_id, write=False)
        if not decision.allowed:
            raise ApiError(
                429,
                "rate_limit_exceeded",
                "Too many requests for this key.",
                {"retry_after": decision.retry_after_seconds},
                headers={"Retry-After": str(decision.retry_after_seconds)},
            )
        call_id = request.path_params["call_id"]
        record = await services.repos.calls.get(call_id, auth.account_id)
        if record is None:
            raise _not_found(call_id)
        store = services.recordings
        info = await store.stat(record.call_id) if record.recording_path else None
        if info is None:
            raise ApiError(
                404, "recording_not_found", "This call has no recording.", {"call_id": call_id}
            )
        headers = {
            **decision.headers(),
            "Accept-Ranges": "bytes",
            "Last-Modified": formatdate(info.modified_at.timestamp(), usegmt=True),
        }
        try:
            byte_range = parse_byte_range(request.headers.get("range"), info.size_bytes)
        except RangeNotSatisfiable as exc:
            raise ApiError(
                416,
                "range_not_satisfiable",
                "The requested range is outside the recording.",
                {"size_bytes": info.size_bytes},
                headers={**headers, "Content-Range": f"bytes */{info.size_bytes}"},
            ) from exc
    except ApiError as error:
        return error_response(error)
    if byte_range is None:
        start, end, status = 0, info.size_bytes - 1, 200
    else:
        (start, end), status = byte_range, 206
        headers["Content-Range"] = f"bytes {start}-{end}/{info.size_bytes}"
    headers["Content-Length"] = str(max(0, end - start + 1))
    if request.method == "HEAD" or end < start:
        return Response(b"", status_code=status, media_type="audio/wav", headers=headers)
    return StreamingResponse(
        store.read(record.call_id, start, end),
        status_code=status,
        media_type="audio/wav",
        headers=headers,
    )


def routes() -> list[Route]:
    return [
        Route("/v1/calls/outbound", endpoint(create_outbound), methods=["POST"]),
        Route("/v1/calls", endpoint(list_calls), methods=["GET"]),
        Route("/v1/calls/{call_id}", endpoint(get_call), methods=["GET"]),
        Route("/v1/calls/{call_id}", endpoint(delete_call), methods=["DELETE"]),
        Route("/v1/calls/{call_id}/recording", get_recording, methods=["GET"]),
        Route("/v1/calls/{call_id}/webhooks", endpoint(list_webhooks), methods=["GET"]),
    ]
