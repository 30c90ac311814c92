"""A fake Twilio REST API (2010-04-01) for tests, benchmarks and the sandbox.

It speaks the wire format the official ``twilio`` SDK expects (wire-protocols §2), so the
engine's real SDK code paths run against it when ``Settings.twilio_api_base_url`` points here:

* ``GET  /2010-04-01/Accounts/{AC}/IncomingPhoneNumbers.json[?PhoneNumber=+1...]`` — a page
  of the account's numbers (how the engine verifies an imported number).
* ``POST /2010-04-01/Accounts/{AC}/Calls.json`` — create a call: 201 and the real call JSON;
  errors with Twilio's codes and body shape: 21211 invalid ``To``, 21210 ``From`` not owned
  or verified, 21205 neither ``Url`` nor ``Twiml``, plus scripted refusals.
* ``GET  /2010-04-01/Accounts/{AC}/Calls/{CA}.json`` — fetch a call.
* ``POST /2010-04-01/Accounts/{AC}/Calls/{CA}.json`` — update ``Status`` (``completed`` /
  ``canceled``); 20404 for an unknown call.

Every request needs HTTP Basic auth ``AccountSid:AuthToken`` of an account added with
:meth:`FakeTwilio.add_account`; anything else gets 401 with code 20003.

:class:`FakeTwilio` is the state (accounts, numbers, calls, scripted failures). It is meant to
grow into the whole carrier: ``on_call_created`` hooks are awaited after a call is created,
which is where a later issue starts the fake callee (status callbacks, media stream).
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

__all__ = [
    "FakeCall",
    "FakeTwilio",
    "FakeTwilioAccount",
    "FakeTwilioNumber",
    "TwilioErrorSpec",
    "twilio_routes",
]

API = "/2010-04-01"
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")


def _sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def _rfc2822(moment: datetime) -> str:
    return format_datetime(moment, usegmt=True)


@dataclass(slots=True, frozen=True)
class TwilioErrorSpec:
    """A Twilio REST error: ``code`` (e.g. 21211), ``message``, HTTP ``status``."""

    code: int
    message: str
    status: int = 400

    def response(self) -> JSONResponse:
        return JSONResponse(
            {
                "code": self.code,
                "message": self.message,
                "more_info": f"https://www.twilio.com/docs/errors/{self.code}",
                "status": self.status,
            },
            status_code=self.status,
        )


@dataclass(slots=True)
class FakeTwilioNumber:
    phone_number: str
    sid: str
    account_sid: str
    friendly_name: str
    date_created: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "sid": self.sid,
            "account_sid": self.account_sid,
            "friendly_name": self.friendly_name,
            "phone_number": self.phone_number,
            "voice_url": None,
            "voice_method": "POST",
            "sms_url": None,
            "status": "in-use",
            "capabilities": {"voice": True, "sms": True, "mms": False, "fax": False},
            "date_created": _rfc2822(self.date_created),
            "date_updated": _rfc2822(self.date_created),
            "api_version": "2010-04-01",
            "uri": f"{API}/Accounts/{self.account_sid}/IncomingPhoneNumbers/{self.sid}.json",
        }


@dataclass(slots=True)
class FakeTwilioAccount:
    sid: str
    auth_token: str = field(repr=False)
    numbers: dict[str, FakeTwilioNumber] = field(default_factory=dict)
    verified_caller_ids: set[str] = field(default_factory=set)


@dataclass(slots=True)
class FakeCall:
    sid: str
    account_sid: str
    to: str
    from_: str
    status: str
    params: dict[str, list[str]]
    date_created: datetime
    date_updated: datetime
    answered_by: str | None = None

    def as_json(self) -> dict[str, Any]:
        base = f"{API}/Accounts/{self.account_sid}/Calls/{self.sid}"
        return {
            "sid": self.sid,
            "date_created": _rfc2822(self.date_created),
            "date_updated": _rfc2822(self.date_updated),
            "parent_call_sid": None,
            "account_sid": self.account_sid,
            "to": self.to,
            "to_formatted": self.to,
            "from": self.from_,
            "from_formatted": self.from_,
            "phone_number_sid": None,
            "status": self.status,
            "start_time": None,
            "end_time": None,
            "duration": None,
            "price": None,
            "price_unit": "USD",
            "direction": "outbound-api",
            "answered_by": self.answered_by,
            "api_version": "2010-04-01",
            "forwarded_from": None,
            "group_sid": None,
            "caller_name": None,
            "queue_time": "0",
            "trunk_sid": None,
            "uri": base + ".json",
            "subresource_uris": {
                "notifications": base + "/Notifications.json",
                "recordings": base + "/Recordings.json",
                "events": base + "/Events.json",
            },
        }


CallHook = Callable[["FakeCall"], Awaitable[None]]


class FakeTwilio:
    """The fake carrier's state: accounts, their numbers, created calls, scripted errors."""

    def __init__(self) -> None:
        self.accounts: dict[str, FakeTwilioAccount] = {}
        self.calls: dict[str, FakeCall] = {}
        # to_number -> the error Calls.json answers for it (e.g. a carrier-blocked number)
        self.call_failures: dict[str, TwilioErrorSpec] = {}
        self.on_call_created: list[CallHook] = []
        self.requests: list[tuple[str, str]] = []

    def add_account(
        self, sid: str | None = None, auth_token: str | None = None
    ) -> FakeTwilioAccount:
        account = FakeTwilioAccount(
            sid=sid or _sid("AC"), auth_token=auth_token or secrets.token_hex(16)
        )
        self.accounts[account.sid] = account
        return account

    def add_number(
        self, account_sid: str, phone_number: str, friendly_name: str | None = None
    ) -> FakeTwilioNumber:
        number = FakeTwilioNumber(
            phone_number=phone_number,
            sid=_sid("PN"),
            account_sid=account_sid,
            friendly_name=friendly_name or phone_number,
            date_created=datetime.now(UTC),
        )
        self.accounts[account_sid].numbers[phone_number] = number
        return number

    def authenticate(self, request: Request, account_sid: str) -> FakeTwilioAccount | None:
        header = request.headers.get("authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        account = self.accounts.get(user)
        if account is None or user != account_sid or password != account.auth_token:
            return None
        return account


_AUTH_ERROR = TwilioErrorSpec(20003, "Authenticate", 401)


async def _form(request: Request) -> dict[str, list[str]]:
    body = (await request.body()).decode("utf-8", "replace")
    return parse_qs(body, keep_blank_values=True)


def twilio_routes(state: FakeTwilio) -> list[BaseRoute]:
    """The fake's Starlette routes, bound to ``state``."""

    async def list_numbers(request: Request) -> Response:
        account_sid = request.path_params["account_sid"]
        state.requests.append(("GET", request.url.path))
        account = state.authenticate(request, account_sid)
        if account is None:
            return _AUTH_ERROR.response()
        wanted = request.query_params.get("PhoneNumber")
        raw_size = request.query_params.get("PageSize", "50")
        page_size = int(raw_size) if raw_size.isdigit() else 50
        numbers = [
            n.as_json()
            for n in account.numbers.values()
            if wanted is None or n.phone_number == wanted
        ][:page_size]
        uri = f"{API}/Accounts/{account_sid}/IncomingPhoneNumbers.json"
        return JSONResponse(
            {
                "incoming_phone_numbers": numbers,
                "end": max(len(numbers) - 1, 0),
                "first_page_uri": f"{uri}?PageSize={page_size}&Page=0",
                "next_page_uri": None,
                "page": 0,
                "page_size": page_size,
                "previous_page_uri": None,
                "start": 0,
                "uri": f"{uri}?PageSize={page_size}&Page=0",
            }
        )

    async def create_call(request: Request) -> Response:
        account_sid = request.path_params["account_sid"]
        state.requests.append(("POST", request.url.path))
        account = state.authenticate(request, account_sid)
        if account is None:
            return _AUTH_ERROR.response()
        form = await _form(request)
        to = (form.get("To") or [""])[0]
        from_ = (form.get("From") or [""])[0]
        if not _E164.fullmatch(to):
            return TwilioErrorSpec(
                21211, f"The 'To' number {to} is not a valid phone number."
            ).response()
        if from_ not in account.numbers and from_ not in account.verified_caller_ids:
            return TwilioErrorSpec(
                21210,
                f"The source phone number provided, {from_}, is not yet verified for your "
                "account. You may only make calls from phone numbers that you've verified or "
                "purchased from Twilio.",
            ).response()
        if not form.get("Url") and not form.get("Twiml") and not form.get("ApplicationSid"):
            return TwilioErrorSpec(21205, "Url parameter is required.").response()
        failure = state.call_failures.get(to)
        if failure is not None:
            return failure.response()
        now = datetime.now(UTC)
        call = FakeCall(
            sid=_sid("CA"),
            account_sid=account_sid,
            to=to,
            from_=from_,
            status="queued",
            params=form,
            date_created=now,
            date_updated=now,
        )
        state.calls[call.sid] = call
        for hook in state.on_call_created:
            await hook(call)
        return JSONResponse(call.as_json(), status_code=201)

    def _owned_call(account_sid: str, call_sid: str) -> FakeCall | None:
        call = state.calls.get(call_sid)
        return call if call is not None and call.account_sid == account_sid else None

    async def fetch_call(request: Request) -> Response:
        account_sid = request.path_params["account_sid"]
        if state.authenticate(request, account_sid) is None:
            return _AUTH_ERROR.response()
        call = _owned_call(account_sid, request.path_params["call_sid"])
        if call is None:
            return _not_found(request)
        return JSONResponse(call.as_json())

    async def update_call(request: Request) -> Response:
        account_sid = request.path_params["account_sid"]
        state.requests.append(("POST", request.url.path))
        if state.authenticate(request, account_sid) is None:
            return _AUTH_ERROR.response()
        call = _owned_call(account_sid, request.path_params["call_sid"])
        if call is None:
            return _not_found(request)
        form = await _form(request)
        status = (form.get("Status") or [""])[0]
        if status:
            if status not in ("completed", "canceled"):
                return TwilioErrorSpec(21218, f"Invalid value for Status: {status}", 400).response()
            if call.status not in ("completed", "canceled", "failed", "busy", "no-answer"):
                call.status = status
                call.date_updated = datetime.now(UTC)
        return JSONResponse(call.as_json())

    def _not_found(request: Request) -> Response:
        return TwilioErrorSpec(
            20404, f"The requested resource {request.url.path} was not found", 404
        ).response()

    account = f"{API}/Accounts/{{account_sid}}"
    return [
        Route(f"{account}/IncomingPhoneNumbers.json", list_numbers, methods=["GET"]),
        Route(f"{account}/Calls.json", create_call, methods=["POST"]),
        Route(f"{account}/Calls/{{call_sid}}.json", fetch_call, methods=["GET"]),
        Route(f"{account}/Calls/{{call_sid}}.json", update_call, methods=["POST"]),
    ]
