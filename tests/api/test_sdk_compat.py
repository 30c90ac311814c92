"""The official ``nixflex`` SDK (0.2.0), unchanged, against a real uvicorn server on 127.0.0.1.

The SDK sends ``Authorization: Bearer key_id:key_secret``, always sends ``prompt`` on
``calls.create``, passes ``variables`` / ``**extra`` through, URL-encodes E.164 paths, and maps
statuses to typed errors (401, 404, 429 with ``retry_after_seconds``, 400/422, others base).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from nixflex import (
    Nixflex,
    NixflexAuthenticationError,
    NixflexError,
    NixflexInvalidRequestError,
    NixflexNotFoundError,
    NixflexRateLimitError,
)

from nixflex_engine.calls.dialer import InstantDialer
from nixflex_engine.sandbox.fake_twilio import FakeTwilio
from nixflex_engine.server import create_app

from .support import free_port, make_settings, random_e164


@dataclass
class Server:
    base_url: str
    twilio: FakeTwilio
    dialer: InstantDialer

    def new_key(self, max_concurrent_calls: int | None = None) -> str:
        body: dict[str, Any] = {"name": "sdk"}
        if max_concurrent_calls is not None:
            body["max_concurrent_calls"] = max_concurrent_calls
        r = httpx.post(f"{self.base_url}/v1/keys", json=body)
        assert r.status_code == 201, r.text
        return f"{r.json()['key_id']}:{r.json()['key_secret']}"

    def client(self, api_key: str) -> Nixflex:
        return Nixflex(api_key=api_key, base_url=self.base_url, max_retries=0, timeout=10)

    def buy_number(self) -> tuple[str, str, str]:
        account = self.twilio.add_account()
        number = random_e164()
        self.twilio.add_number(account.sid, number)
        return number, account.sid, account.auth_token


@pytest.fixture(scope="module")
def server(
    sqlite_url: str, fake_twilio: tuple[FakeTwilio, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    settings = make_settings(
        sqlite_url, fake_twilio[1], tmp_path_factory.mktemp("sdk"), signup_enabled=True
    )
    dialer = InstantDialer()
    app = create_app(settings, dialer=dialer)
    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not uv.started:
        assert time.monotonic() < deadline, "engine did not start"
        time.sleep(0.01)
    yield Server(f"http://127.0.0.1:{port}", fake_twilio[0], dialer)
    uv.should_exit = True
    thread.join(10)


def test_agents_numbers_and_calls_through_the_sdk(server: Server) -> None:
    with server.client(server.new_key()) as nx:
        agent = nx.agents.create(name="Reception", system_prompt="Call {patient_name}.")
        agent_id = agent["agent_id"]
        assert nx.agents.get(agent_id)["name"] == "Reception"
        assert (
            nx.agents.update(agent_id, interruption_sensitivity=70)["interruption_sensitivity"]
            == 70
        )
        assert nx.agents.list(limit=10, offset=0)["agents"][0]["agent_id"] == agent_id

        number, sid, token = server.buy_number()
        imported = nx.phone_numbers.import_(
            number, agent_id, twilio_account_sid=sid, twilio_auth_token=token
        )
        assert imported["phone_number"] == number and "twilio_auth_token" not in imported
        assert (
            nx.phone_numbers.list(agent_id=agent_id)["phone_numbers"][0]["phone_number"] == number
        )
        assert nx.phone_numbers.update(number, agent_id=agent_id)["agent_id"] == agent_id

        # calls.create with `variables` ...
        call = nx.calls.create(
            agent_id, "+447386172392", "Confirm Tuesday.", variables={"patient_name": "Sarah"}
        )
        assert set(call) == {"call_id", "status", "agent_id", "to_number", "from_number"}
        assert call["status"] == "queued" and call["from_number"] == number
        record = nx.calls.get(call["call_id"])
        assert record["dynamic_vars"] == {"patient_name": "Sarah"}
        assert record["prompt"] == "Confirm Tuesday."
        # ... and with the seed's `dynamic_vars`, metadata and from_number via **extra
        call2 = nx.calls.create(
            agent_id,
            "+447386172393",
            "",
            from_number=number,
            dynamic_vars={"patient_name": "Tom"},
            metadata={"internal_lead_id": "lead_abc123"},
        )
        assert call2["metadata"] == {"internal_lead_id": "lead_abc123"}
        assert nx.calls.get(call2["call_id"])["dynamic_vars"] == {"patient_name": "Tom"}
        listing = nx.calls.list(agent_id=agent_id, limit=10)
        assert [c["call_id"] for c in listing["calls"]] == [call2["call_id"], call["call_id"]]

        # webhook slots and usage
        assert (
            nx.webhooks.set(number, "https://crm.example.com/h")["url"]
            == "https://crm.example.com/h"
        )
        assert nx.webhooks.get(number, slot=2)["url"] is None
        assert nx.usage.get()["in_flight"] == 2

        with pytest.raises(NixflexError) as conflict:
            nx.calls.delete(call["call_id"])  # still live
        assert conflict.value.status == 409 and conflict.value.code == "call_in_progress"
        assert nx.phone_numbers.delete(number)["deleted"] is True
        assert nx.agents.delete(agent_id)["deleted"] is True


def test_sdk_delete_call_after_it_ended(server: Server) -> None:
    key = server.new_key()
    with server.client(key) as nx:
        agent = nx.agents.create(name="A")
        number, sid, token = server.buy_number()
        nx.phone_numbers.import_(number, agent["agent_id"], twilio_sid=sid, twilio_token=token)
        failing = random_e164("+1555")
        from nixflex_engine.calls.dialer import DialError

        server.dialer.failures[failing] = DialError(21211, "invalid To", 400)
        with pytest.raises(NixflexError) as failed:
            nx.calls.create(agent["agent_id"], failing, "x")
        assert failed.value.status == 502 and failed.value.code == "outbound_failed"
        assert failed.value.details["twilio_error"]["code"] == 21211
        call_id = failed.value.details["call_id"]
        assert nx.calls.get(call_id)["status"] == "failed"
        assert nx.calls.delete(call_id)["deleted"] is True
        with pytest.raises(NixflexNotFoundError):
            nx.calls.get(call_id)


def test_sdk_typed_errors(server: Server) -> None:
    key = server.new_key(max_concurrent_calls=1)
    with server.client(key) as nx:
        with pytest.raises(NixflexNotFoundError) as nf:
            nx.agents.get("agent_0000000000000000")
        assert nf.value.code == "agent_not_found" and nf.value.doc_url
        with pytest.raises(NixflexInvalidRequestError) as bad:
            nx.calls.create("agent_x", "07386172392", "p")
        assert (
            bad.value.code == "invalid_phone_format" and bad.value.details["field"] == "to_number"
        )
        with pytest.raises(NixflexInvalidRequestError) as unknown:
            nx.agents.create(name="x", temperature=0.3)
        assert unknown.value.code == "invalid_request"

        agent = nx.agents.create(name="A")
        number, sid, token = server.buy_number()
        nx.phone_numbers.import_(
            number, agent["agent_id"], twilio_account_sid=sid, twilio_auth_token=token
        )
        nx.calls.create(agent["agent_id"], "+447386172392", "p")
        with pytest.raises(NixflexRateLimitError) as limited:
            nx.calls.create(agent["agent_id"], "+447386172392", "p")
        assert limited.value.code == "concurrent_call_limit"
        assert limited.value.retry_after_seconds == 5

        with pytest.raises(NixflexError) as conflict:
            nx.phone_numbers.import_(
                number, agent["agent_id"], twilio_account_sid=sid, twilio_auth_token=token
            )
        assert conflict.value.status == 409 and conflict.value.code == "phone_number_exists"

    with server.client(server.new_key()) as stranger:
        with pytest.raises(NixflexError) as forbidden:
            stranger.calls.create(agent["agent_id"], "+447386172392", "p")
        assert forbidden.value.status == 403 and forbidden.value.code == "agent_not_owned"

    with server.client(key.split(":")[0] + ":nxfs_wrong") as wrong:
        with pytest.raises(NixflexAuthenticationError) as auth:
            wrong.agents.list()
        assert auth.value.code == "invalid_api_key" and auth.value.status == 401


def test_sdk_key_rotation(server: Server) -> None:
    key = server.new_key()
    with server.client(key) as nx:
        new = nx.keys.rotate()
    with server.client(key) as old, pytest.raises(NixflexAuthenticationError):
        old.agents.list()
    with server.client(f"{new['key_id']}:{new['key_secret']}") as fresh:
        assert fresh.agents.list()["count"] == 0
