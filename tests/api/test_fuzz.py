"""Fuzz every documented operation with schemathesis (bounded examples): no input may produce a
5xx (except the documented 502 from a carrier), and every response must match the OpenAPI
document: documented status codes, content types and JSON schemas."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from nixflex_engine.api.openapi import openapi_document
from nixflex_engine.calls.dialer import InstantDialer
from nixflex_engine.sandbox.fake_twilio import FakeTwilio
from nixflex_engine.server import create_app

from .support import free_port, make_settings, random_e164

schema = schemathesis.openapi.from_dict(openapi_document("http://127.0.0.1"))


@dataclass
class FuzzServer:
    url: str
    headers: dict[str, str]


@pytest.fixture(scope="module")
def fuzz_server(
    sqlite_url: str, fake_twilio: tuple[FakeTwilio, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FuzzServer]:
    app = create_app(
        make_settings(
            sqlite_url, fake_twilio[1], tmp_path_factory.mktemp("fuzz"), signup_enabled=True
        ),
        dialer=InstantDialer(),
    )
    port = free_port()
    uv = uvicorn_server(app, port)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not uv.started:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    url = f"http://127.0.0.1:{port}"
    key = httpx.post(f"{url}/v1/keys", json={"name": "fuzz"}).json()
    headers = {"Authorization": f"Bearer {key['key_id']}:{key['key_secret']}"}
    # give the fuzzer something real to hit as well
    agent = httpx.post(f"{url}/v1/agents", json={"name": "fuzz"}, headers=headers).json()
    state = fake_twilio[0]
    tw = state.add_account()
    number = random_e164()
    state.add_number(tw.sid, number)
    httpx.post(
        f"{url}/v1/phone-numbers",
        json={
            "phone_number": number,
            "agent_id": agent["agent_id"],
            "twilio_account_sid": tw.sid,
            "twilio_auth_token": tw.auth_token,
        },
        headers=headers,
    )
    yield FuzzServer(url, headers)
    uv.should_exit = True
    thread.join(10)


def uvicorn_server(app: Any, port: int) -> Any:
    import uvicorn

    return uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))


@schema.parametrize()
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_server_errors_and_responses_match_the_schema(
    case: Any, fuzz_server: FuzzServer
) -> None:
    response = case.call(base_url=fuzz_server.url, headers=fuzz_server.headers, timeout=10)
    if response.status_code == 502:
        # a documented carrier error (e.g. the fake Twilio refusing a generated number)
        assert response.json()["error"]["type"] == "provider_error"
        return
    case.validate_response(
        response,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )
