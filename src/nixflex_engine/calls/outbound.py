"""The outbound-call service behind ``POST /v1/calls/outbound``.

Validation runs in exactly the order of the user's page and api.md; the first failure wins:

1. ``agent_id`` and ``to_number`` present and non-empty → 400 ``missing_field``.
2. ``to_number`` (and ``from_number`` when given) E.164 → 400 ``invalid_phone_format``;
   then every other field's type/enum/size → 400 ``invalid_request`` (``prompt_too_long``).
3. The agent exists (404 ``agent_not_found``) and is this account's (403 ``agent_not_owned``).
4. It has a number attached, or ``from_number`` is given (400 ``agent_no_phone``); a given
   ``from_number`` is this account's (403 ``from_number_not_owned``).
5. That number has Twilio credentials (400 ``twilio_credentials_missing``).
6. A concurrency slot is free, reserved atomically with writing the ``queued`` record
   (429 ``concurrent_call_limit`` + ``Retry-After``).
7. Dial. A refusal → 502 ``outbound_failed`` with ``details.twilio_error``; the slot is given
   back and the record stays, ``failed``.

Beyond the documented steps, an agent with ``is_active: false`` is refused with 400
``agent_inactive`` after step 5 (so every documented check keeps its precedence).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nixflex_engine.api.errors import ApiError
from nixflex_engine.api.fields import (
    VOICEMAIL_ACTIONS,
    check_enum,
    check_string,
    check_string_map,
    is_e164,
    reject_unknown,
)
from nixflex_engine.api.metrics import Metrics
from nixflex_engine.calls.dialer import Dialer, DialError, DialRequest, TwilioCredentials
from nixflex_engine.calls.tokens import media_stream_token
from nixflex_engine.crypto import Crypto, DecryptionError
from nixflex_engine.log import get_logger, log_event
from nixflex_engine.store.repositories import (
    AgentRecord,
    NewCall,
    PhoneNumberRecord,
    Repositories,
)

__all__ = ["OUTBOUND_FIELDS", "OutboundCallService", "OutboundRequest", "validate_outbound"]

_log = get_logger(__name__)

OUTBOUND_FIELDS = frozenset(
    {
        "agent_id",
        "to_number",
        "from_number",
        "dynamic_vars",
        "variables",
        "voicemail_message",
        "voicemail_action",
        "metadata",
        "campaign_id",
        "prompt",
    }
)
METADATA_MAX_BYTES = 16 * 1024
PROMPT_MAX = 16_000


@dataclass(slots=True, frozen=True)
class OutboundRequest:
    """A syntactically valid outbound request (steps 1 and 2 passed)."""

    agent_id: str
    to_number: str
    from_number: str | None
    dynamic_vars: dict[str, str]
    voicemail_message: str | None
    voicemail_action: str | None
    metadata: dict[str, Any] | None
    campaign_id: str | None
    prompt: str | None


def _present(value: object) -> bool:
    if value is None:
        return False
    return not (isinstance(value, str) and not value.strip())


def validate_outbound(body: Mapping[str, Any]) -> OutboundRequest:
    """Steps 1 and 2 (no I/O)."""
    # 1. presence
    for name in ("agent_id", "to_number"):
        if not _present(body.get(name)):
            raise ApiError(
                400,
                "missing_field",
                f"'{name}' is required and must not be empty.",
                {"field": name},
            )
    # 2. phone formats, then the other fields
    to_number = body["to_number"]
    if not is_e164(to_number):
        raise _bad_phone("to_number", to_number)
    from_number = body.get("from_number")
    if from_number is not None and not is_e164(from_number):
        raise _bad_phone("from_number", from_number)
    reject_unknown(body, OUTBOUND_FIELDS)
    agent_id = check_string("agent_id", body["agent_id"], max_length=64)
    assert agent_id is not None
    dynamic_vars: dict[str, str] = {}
    if body.get("dynamic_vars") is not None and body.get("variables") is not None:
        raise ApiError(
            400,
            "invalid_request",
            "Send 'dynamic_vars' or its alias 'variables', not both.",
            {"field": "variables"},
        )
    for name in ("dynamic_vars", "variables"):
        if body.get(name) is not None:
            dynamic_vars = check_string_map(
                name, body[name], max_items=100, max_key=100, max_value=4000
            )
    voicemail_message = check_string(
        "voicemail_message", body.get("voicemail_message"), max_length=2000, nullable=True
    )
    voicemail_action = None
    if body.get("voicemail_action") is not None:
        voicemail_action = check_enum(
            "voicemail_action", body["voicemail_action"], VOICEMAIL_ACTIONS
        )
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise ApiError.invalid("metadata", "'metadata' must be an object.", expected="object")
        size = len(json.dumps(metadata, ensure_ascii=False, separators=(",", ":")).encode())
        if size > METADATA_MAX_BYTES:
            raise ApiError.invalid(
                "metadata",
                f"'metadata' is larger than {METADATA_MAX_BYTES} bytes.",
                max_bytes=METADATA_MAX_BYTES,
                size_bytes=size,
            )
    campaign_id = check_string(
        "campaign_id", body.get("campaign_id"), max_length=64, nullable=True, min_length=1
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
    return OutboundRequest(
        agent_id=agent_id,
        to_number=to_number,
        from_number=from_number,
        dynamic_vars=dynamic_vars,
        voicemail_message=voicemail_message,
        voicemail_action=voicemail_action,
        metadata=metadata,
        campaign_id=campaign_id,
        prompt=prompt,
    )


def _bad_phone(field: str, value: object) -> ApiError:
    return ApiError(
        400,
        "invalid_phone_format",
        f"'{field}' must be an E.164 number such as +447386172392.",
        {"field": field},
    )


class OutboundCallService:
    """Validates, reserves a slot, records, dials. One instance per app."""

    __slots__ = (
        "_crypto",
        "_default_limit",
        "_dialer",
        "_metrics",
        "_repos",
        "_retry_after",
        "_tokens",
    )

    _TOKEN_CACHE_SIZE = 1024

    def __init__(
        self,
        *,
        repos: Repositories,
        crypto: Crypto,
        dialer: Dialer | None,
        default_max_concurrent_calls: int,
        concurrency_retry_after_seconds: int,
        metrics: Metrics | None = None,
    ) -> None:
        self._repos = repos
        self._crypto = crypto
        self._dialer = dialer
        self._default_limit = default_max_concurrent_calls
        self._retry_after = concurrency_retry_after_seconds
        self._metrics = metrics or Metrics()
        # ciphertext -> auth token: decrypting on every dial costs more than the rest of step 5
        self._tokens: dict[str, str] = {}

    async def create(
        self, account_id: str, body: Mapping[str, Any], *, call_ref: str | None = None
    ) -> dict[str, Any]:
        """Run the seven steps; return the 201 body or raise :class:`ApiError`.

        ``call_ref`` records the call under a reference fixed beforehand (the campaign
        dispatcher's per-attempt reference); when a call with it already exists, nothing is
        written or dialed and :class:`~nixflex_engine.store.repositories.DuplicateError` is
        raised.
        """
        try:
            return await self._create(account_id, body, call_ref)
        except ApiError as error:
            outcome = {429: "limited", 502: "dial_failed"}.get(error.status, "rejected")
            self._metrics.count_outbound(outcome)
            raise

    async def _create(
        self, account_id: str, body: Mapping[str, Any], call_ref: str | None
    ) -> dict[str, Any]:
        req = validate_outbound(body)
        repos = self._repos
        agent, number, credentials = await self.check_sender(
            account_id, req.agent_id, req.from_number
        )
        config = agent.config
        # 6. reserve a slot and write the record
        voicemail_action = req.voicemail_action or str(config.get("voicemail_action", "hangup"))
        record = await repos.calls.create_reserving_slot(
            NewCall(
                account_id=account_id,
                agent_id=agent.agent_id,
                from_number=number.phone_number,
                to_number=req.to_number,
                voicemail_action=voicemail_action,
                dynamic_vars=req.dynamic_vars,
                metadata=req.metadata,
                campaign_id=req.campaign_id,
                prompt=req.prompt,
                voicemail_message=req.voicemail_message,
                call_ref=call_ref,
            ),
            default_limit=self._default_limit,
        )
        if record is None:
            account = await repos.accounts.get(account_id)
            limit = (
                account.max_concurrent_calls
                if account is not None and account.max_concurrent_calls is not None
                else self._default_limit
            )
            raise ApiError(
                429,
                "concurrent_call_limit",
                f"Your account already has {limit} calls in flight; retry when one ends.",
                {"limit": limit, "retry_after": self._retry_after},
                headers={"Retry-After": str(self._retry_after)},
            )
        # 7. dial
        dial_request = DialRequest(
            call_ref=record.call_ref,
            account_id=account_id,
            agent_id=agent.agent_id,
            to_number=req.to_number,
            from_number=number.phone_number,
            credentials=credentials,
            amd_enabled=bool(config.get("amd_enabled", True)),
            record_call=bool(config.get("record_call", True)),
            max_call_duration_seconds=int(config.get("max_call_duration_seconds", 300)),
            stream_token=media_stream_token(self._crypto, record.call_ref),
        )
        try:
            if self._dialer is None:
                raise DialError(
                    "dialer_not_configured", "No carrier dialer is configured on this server.", None
                )
            result = await self._dialer.dial(dial_request)
        except DialError as exc:
            await self._dial_failed(record.call_ref, exc.as_details())
            raise ApiError(
                502,
                "outbound_failed",
                f"The carrier rejected the call: {exc.message}",
                {"twilio_error": exc.as_details(), "call_id": record.call_id},
            ) from exc
        except asyncio.CancelledError:
            # The request is going away (client gone, shutdown): never leave the slot held.
            details = {
                "code": None,
                "message": "Cancelled before the carrier answered.",
                "status": None,
            }
            await asyncio.shield(self._dial_failed(record.call_ref, details))
            raise
        except Exception as exc:
            log_event(_log, "outbound.dial_error", call_id=record.call_ref, exc_info=exc)
            details = {"code": None, "message": "The carrier could not be reached.", "status": None}
            await self._dial_failed(record.call_ref, details)
            raise ApiError(
                502,
                "outbound_failed",
                "The carrier could not be reached.",
                {"twilio_error": details, "call_id": record.call_id},
            ) from exc
        await repos.calls.mark_dialed(record.call_ref, result.call_sid)
        call_id = result.call_sid
        self._metrics.count_outbound("created")
        log_event(
            _log,
            "outbound.dialed",
            call_id=call_id,
            agent_id=agent.agent_id,
            account_id=account_id,
        )
        response: dict[str, Any] = {
            "call_id": call_id,
            "status": "queued",
            "agent_id": agent.agent_id,
            "to_number": req.to_number,
            "from_number": number.phone_number,
        }
        if req.campaign_id is not None:
            response["campaign_id"] = req.campaign_id
        if req.metadata is not None:
            response["metadata"] = req.metadata
        return response

    async def check_sender(
        self, account_id: str, agent_id: str, from_number: str | None
    ) -> tuple[AgentRecord, PhoneNumberRecord, TwilioCredentials]:
        """Steps 3-5 (and the inactive-agent check): the agent, the number to call from and
        its carrier credentials, or the :class:`ApiError` the outbound route would answer.
        Campaign creation runs the same checks once for the whole campaign."""
        # 3. ownership
        # One read fetches the agent and the number steps 4-5 need; the checks stay in order.
        agent, number = await self._repos.agents.get_with_number(agent_id, from_number)
        if agent is None:
            raise ApiError(404, "agent_not_found", "No agent with this id.", {"agent_id": agent_id})
        if agent.account_id != account_id:
            raise ApiError(
                403,
                "agent_not_owned",
                "This agent does not belong to your API key's account.",
                {"agent_id": agent_id},
            )
        # 4. a number to call from
        if from_number is not None:
            if number is None or number.account_id != account_id:
                raise ApiError(
                    403,
                    "from_number_not_owned",
                    "from_number is not a phone number of your account.",
                    {"field": "from_number", "from_number": from_number},
                )
        elif number is None:
            raise ApiError(
                400,
                "agent_no_phone",
                "The agent has no phone number attached; attach one or pass from_number.",
                {"agent_id": agent.agent_id},
            )
        # 5. carrier credentials on that number
        credentials = self._credentials(
            number.twilio_account_sid, number.twilio_auth_token_encrypted
        )
        if credentials is None:
            raise ApiError(
                400,
                "twilio_credentials_missing",
                "The phone number has no Twilio credentials; re-import it with "
                "twilio_account_sid and twilio_auth_token.",
                {"phone_number": number.phone_number},
            )
        config = agent.config
        if config.get("is_active") is False:
            raise ApiError(
                400,
                "agent_inactive",
                "The agent is inactive (is_active: false).",
                {"agent_id": agent.agent_id},
            )
        return agent, number, credentials

    async def _dial_failed(self, call_ref: str, details: dict[str, Any]) -> None:
        await self._repos.calls.fail_dial(call_ref, details)
        log_event(_log, "outbound.dial_failed", call_id=call_ref, twilio_error=details)

    def _credentials(
        self, sid: str | None, token_encrypted: str | None
    ) -> TwilioCredentials | None:
        if not sid or not token_encrypted:
            return None
        token = self._tokens.get(token_encrypted)
        if token is None:
            try:
                token = self._crypto.decrypt(token_encrypted)
            except DecryptionError:
                log_event(_log, "outbound.credentials_unreadable", twilio_account_sid=sid)
                return None
            if len(self._tokens) >= self._TOKEN_CACHE_SIZE:
                self._tokens.clear()
            self._tokens[token_encrypted] = token
        return TwilioCredentials(account_sid=sid, auth_token=token) if token else None
