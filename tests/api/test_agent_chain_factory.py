"""The agent field ``chain_factory``: syntax, the operator's allow-list (400
``chain_factory_not_allowed`` on create and update), null to clear, and the OpenAPI schema."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from nixflex_engine.api.openapi import openapi_document
from nixflex_engine.calls.factories import CHAIN_FACTORY_PATTERN
from nixflex_engine.sandbox.fake_twilio import FakeTwilio

from .support import Env, assert_error, start_env


@pytest.fixture
async def allowing_env(
    sqlite_url: str, fake_twilio: tuple[FakeTwilio, str], tmp_path: Any
) -> AsyncIterator[Env]:
    async for e in start_env(
        sqlite_url,
        fake_twilio,
        tmp_path,
        allowed_chain_factories=["myapp.chains:build", "examples.keyword_spotter:*"],
    ):
        yield e


async def test_allowed_factories_are_stored_and_cleared(allowing_env: Env) -> None:
    env = allowing_env
    account = await env.account()
    plain = await env.agent(account)
    assert plain["chain_factory"] is None  # the default: the standard chain
    agent = await env.agent(account, chain_factory="myapp.chains:build")
    assert agent["chain_factory"] == "myapp.chains:build"
    url, h = f"/v1/agents/{agent['agent_id']}", account.headers
    other = "examples.keyword_spotter:other"
    r = await env.client.put(url, json={"chain_factory": other}, headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["chain_factory"] == "examples.keyword_spotter:other"
    r = await env.client.put(url, json={"chain_factory": None}, headers=h)
    assert r.status_code == 200 and r.json()["chain_factory"] is None


async def test_a_factory_not_allowed_is_refused(allowing_env: Env) -> None:
    env = allowing_env
    account = await env.account()
    body = {"name": "a", "chain_factory": "myapp.chains:other"}
    r = await env.client.post("/v1/agents", json=body, headers=account.headers)
    err = assert_error(r, 400, "chain_factory_not_allowed")
    assert err["details"] == {"field": "chain_factory", "chain_factory": "myapp.chains:other"}
    agent = await env.agent(account)
    url = f"/v1/agents/{agent['agent_id']}"
    r = await env.client.put(
        url, json={"chain_factory": "evil:run", "name": "b"}, headers=account.headers
    )
    assert_error(r, 400, "chain_factory_not_allowed")
    got = (await env.client.get(url, headers=account.headers)).json()
    assert got["name"] == agent["name"] and got["chain_factory"] is None  # nothing written


async def test_nothing_is_allowed_by_default(sqlite_env: Env) -> None:
    env = sqlite_env
    account = await env.account()
    body = {"name": "a", "chain_factory": "myapp.chains:build"}
    r = await env.client.post("/v1/agents", json=body, headers=account.headers)
    assert_error(r, 400, "chain_factory_not_allowed")


@pytest.mark.parametrize("value", ["myapp.chains", "myapp.chains:*", "a b:c", 5, ["x:y"]])
async def test_malformed_paths_are_invalid(allowing_env: Env, value: object) -> None:
    env = allowing_env
    account = await env.account()
    r = await env.client.post(
        "/v1/agents", json={"name": "a", "chain_factory": value}, headers=account.headers
    )
    err = assert_error(r, 400, "invalid_request")
    assert err["details"]["field"] == "chain_factory"


def test_openapi_documents_the_field() -> None:
    doc = openapi_document("http://127.0.0.1")
    for schema in ("AgentInput", "AgentCreate", "Agent"):
        prop = doc["components"]["schemas"][schema]["properties"]["chain_factory"]
        assert prop["type"] == ["string", "null"]
        assert prop["pattern"] == CHAIN_FACTORY_PATTERN
        assert "allowed_chain_factories" in prop["description"]
