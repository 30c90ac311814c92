"""The official ``nixflex`` SDK's ``campaigns.create`` / ``campaigns.launch``, unchanged, against
a real uvicorn server on 127.0.0.1 whose dispatcher runs on its own."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import uvicorn
from nixflex import Nixflex, NixflexError, NixflexInvalidRequestError

from api.support import free_port, make_settings, random_e164
from nixflex_engine.calls.dialer import InstantDialer
from nixflex_engine.sandbox.fake_twilio import FakeTwilio
from nixflex_engine.server import create_app


@dataclass
class Server:
    base_url: str
    twilio: FakeTwilio
    dialer: InstantDialer


@pytest.fixture(scope="module")
def server(
    sqlite_url: str, fake_twilio: tuple[FakeTwilio, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    settings = make_settings(
        sqlite_url,
        fake_twilio[1],
        tmp_path_factory.mktemp("sdk"),
        signup_enabled=True,
        campaign_dispatch_interval_seconds=0.05,
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


def _ready(server: Server) -> tuple[Nixflex, str, str]:
    key = httpx.post(f"{server.base_url}/v1/keys", json={"name": "sdk"}).json()
    client = Nixflex(
        api_key=f"{key['key_id']}:{key['key_secret']}",
        base_url=server.base_url,
        max_retries=0,
        timeout=30,
    )
    agent = client.agents.create(name="Campaigner", system_prompt="You call {name}.")
    account = server.twilio.add_account()
    number = random_e164()
    server.twilio.add_number(account.sid, number)
    client.phone_numbers.import_(
        number,
        agent["agent_id"],
        twilio_account_sid=account.sid,
        twilio_auth_token=account.auth_token,
    )
    return client, agent["agent_id"], number


def _wait_dialed(server: Server, numbers: set[str], timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not numbers <= {d.to_number for d in server.dialer.dialed}:
        assert time.monotonic() < deadline, "the dispatcher did not dial"
        time.sleep(0.05)


def test_sdk_create_dials_now(server: Server) -> None:
    client, agent_id, number = _ready(server)
    recipients = [
        {"phone": "+15551230001", "variables": {"name": "Ann"}, "prompt_override": "Be brief."},
        {"phone": "+15551230002", "variables": {"name": "Bob"}},
    ]
    camp = client.campaigns.create(agent_id, number, "Remind {name}.", recipients, name="SDK")
    assert camp["status"] == "running" and camp["recipients_total"] == 2
    _wait_dialed(server, {"+15551230001", "+15551230002"})
    calls = client.calls.list(limit=10)["calls"]
    mine = {c["to_number"]: c for c in calls if c["campaign_id"] == camp["campaign_id"]}
    assert mine["+15551230001"]["prompt"] == "Be brief."
    assert mine["+15551230002"]["dynamic_vars"] == {"name": "Bob"}


def test_sdk_scheduled_campaign_launches(server: Server) -> None:
    client, agent_id, number = _ready(server)
    camp = client.campaigns.create(
        agent_id,
        number,
        "Hello {name}.",
        [{"phone": "+15551239001", "variables": {"name": "Cy"}}],
        schedule_type="schedule",
        scheduled_at="2099-01-01T00:00:00Z",
    )
    assert camp["status"] == "scheduled"
    time.sleep(0.3)
    assert "+15551239001" not in {d.to_number for d in server.dialer.dialed}
    launched = client.campaigns.launch(camp["campaign_id"])  # no body
    assert launched["status"] == "running"
    _wait_dialed(server, {"+15551239001"})
    with pytest.raises(NixflexError) as info:
        client.campaigns.launch("camp_0000000000000000")
    assert info.value.status == 404  # type: ignore[attr-defined]
    with pytest.raises(NixflexInvalidRequestError):
        client.campaigns.create(agent_id, number, "x", [{"phone": "12345"}])
