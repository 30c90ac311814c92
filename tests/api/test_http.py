"""Cross-cutting HTTP behaviour: auth and key rotation, the error envelope everywhere,
request ids, rate limits, body limits, malformed input, sign-up, health, metrics, OpenAPI."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from starlette.routing import Route

from nixflex_engine.server import create_app

from .support import Env, assert_error, make_settings, start_env


async def test_auth_failures(sqlite_env: Env) -> None:
    env = sqlite_env
    account = await env.account()
    c = env.client
    cases: list[tuple[dict[str, str], str]] = [
        ({}, "invalid_api_key"),
        ({"Authorization": "Basic abc"}, "invalid_api_key"),
        ({"Authorization": "Bearer"}, "invalid_api_key"),
        ({"Authorization": f"Bearer {account.key_id}"}, "key_secret_required"),
        ({"Authorization": f"Bearer {account.key_id}:"}, "key_secret_required"),
        ({"Authorization": f"Bearer {account.key_id}:nxfs_wrong"}, "invalid_api_key"),
        ({"Authorization": f"Bearer nxf_unknown:{account.key_secret}"}, "invalid_api_key"),
        ({"Authorization": f"Bearer :{account.key_secret}"}, "invalid_api_key"),
        ({"Authorization": "Bearer " + "x" * 5000}, "invalid_api_key"),
    ]
    for headers, code in cases:
        err = assert_error(await c.get("/v1/agents", headers=headers), 401, code)
        assert err["type"] == "authentication_error"
    ok = await c.get(
        "/v1/agents", headers={"Authorization": f"bearer  {account.key_id}:{account.key_secret}"}
    )
    assert ok.status_code == 200


async def test_rotation_old_secret_fails_at_once(env: Env) -> None:
    account = await env.account()
    r = await env.client.post("/v1/keys/rotate", headers=account.headers)
    assert r.status_code == 200, r.text
    new = r.json()
    assert new["key_id"] == account.key_id and new["key_secret"] != account.key_secret
    assert new["key_secret"].startswith("nxfs_")
    assert_error(
        await env.client.get("/v1/agents", headers=account.headers), 401, "invalid_api_key"
    )
    ok = await env.client.get(
        "/v1/agents", headers={"Authorization": f"Bearer {account.key_id}:{new['key_secret']}"}
    )
    assert ok.status_code == 200
    # secrets are stored hashed (auth) and encrypted (webhook signing), never in plain text
    key = await env.services.repos.accounts.get_key(account.key_id)
    assert new["key_secret"] not in key.secret_hash + key.secret_encrypted
    assert env.services.crypto.decrypt(key.secret_encrypted) == new["key_secret"]
    signing = await env.services.repos.accounts.signing_key(account.account_id)
    assert env.services.crypto.decrypt(signing.secret_encrypted) == new["key_secret"]


async def test_signup(sqlite_url: str, fake_twilio: Any, tmp_path: Any) -> None:
    async for env in start_env(sqlite_url, fake_twilio, tmp_path):
        assert_error(await env.client.post("/v1/keys", json={}), 403, "signup_disabled")
    async for env in start_env(sqlite_url, fake_twilio, tmp_path, signup_enabled=True):
        r = await env.client.post("/v1/keys", json={"name": "acme", "max_concurrent_calls": 3})
        assert r.status_code == 201, r.text
        key = r.json()
        assert set(key) == {"key_id", "key_secret"}
        h = {"Authorization": f"Bearer {key['key_id']}:{key['key_secret']}"}
        usage = (await env.client.get("/v1/usage", headers=h)).json()
        assert usage["max_concurrent_calls"] == 3 and usage["calls"] == 0
        assert_error(await env.client.post("/v1/keys", json={"name": 1}), 400, "invalid_request")
        assert_error(await env.client.post("/v1/keys", json={"x": 1}), 400, "invalid_request")


async def test_rate_limits_reads_and_writes(
    sqlite_url: str, fake_twilio: Any, tmp_path: Any
) -> None:
    async for env in start_env(
        sqlite_url,
        fake_twilio,
        tmp_path,
        rate_limit_reads_per_minute=5,
        rate_limit_writes_per_minute=2,
    ):
        account = await env.account()
        h = account.headers
        for i in range(5):
            r = await env.client.get("/v1/agents", headers=h)
            assert r.status_code == 200
            assert r.headers["x-ratelimit-limit"] == "5"
            assert r.headers["x-ratelimit-remaining"] == str(4 - i)
            assert int(r.headers["x-ratelimit-reset"]) >= 1
        r = await env.client.get("/v1/agents", headers=h)
        err = assert_error(r, 429, "rate_limit_exceeded")
        assert err["type"] == "rate_limit_error"
        assert int(r.headers["retry-after"]) >= 1 and err["details"]["retry_after"] >= 1
        assert r.headers["x-ratelimit-remaining"] == "0"
        # writes have their own bucket
        assert (
            await env.client.post("/v1/agents", json={"name": "a"}, headers=h)
        ).status_code == 201
        assert (
            await env.client.post("/v1/agents", json={"name": "b"}, headers=h)
        ).status_code == 201
        assert_error(
            await env.client.post("/v1/agents", json={"name": "c"}, headers=h),
            429,
            "rate_limit_exceeded",
        )
        # per key: another key is unaffected
        other = await env.account()
        assert (await env.client.get("/v1/agents", headers=other.headers)).status_code == 200


async def test_malformed_bodies(sqlite_env: Env) -> None:
    env = sqlite_env
    account = await env.account()
    h = {**account.headers, "Content-Type": "application/json"}

    async def raw(content: bytes) -> httpx.Response:
        return await env.client.post("/v1/agents", content=content, headers=h)

    for content in (
        b"{",
        b"{'a': 1}",
        b"",
        b"\xff\xfe",
        b'{"name": NaN}',
        b"[" * 5000 + b"]" * 5000,
    ):
        assert_error(await raw(content), 400, "invalid_json")
    assert_error(await raw(b"[1, 2]"), 400, "invalid_request")
    assert_error(await raw(b'"just a string"'), 400, "invalid_request")
    assert_error(await raw(b'{"name": "a\\u0000b"}'), 400, "invalid_request")
    assert_error(await raw(b'{"name": "\\ud800"}'), 400, "invalid_json")
    assert_error(await raw(b'{"name": "x", "max_tokens": 1e400}'), 400, "invalid_json")
    deep = b'{"name":"x","extraction_schema":' + b'{"a":' * 40 + b"1" + b"}" * 41
    assert_error(await raw(deep), 400, "invalid_json")
    r = await env.client.post("/v1/calls/outbound", content=b"not json", headers=h)
    assert_error(r, 400, "invalid_json")


async def test_body_over_1mb_is_413(sqlite_env: Env) -> None:
    env = sqlite_env
    account = await env.account()
    big = json.dumps({"name": "x", "system_prompt": "y" * (1024 * 1024)}).encode()
    r = await env.client.post("/v1/agents", content=big, headers=account.headers)
    err = assert_error(r, 413, "payload_too_large")
    assert err["details"]["max_bytes"] == 1024 * 1024

    async def chunks() -> Any:  # no Content-Length: the cap is enforced while reading
        for _ in range(20):
            yield b"x" * 100_000

    r = await env.client.post("/v1/agents", content=chunks(), headers=account.headers)
    assert_error(r, 413, "payload_too_large")
    # just under the limit is fine (and then fails validation, not size)
    ok = json.dumps({"name": "x", "system_prompt": "y" * 1000}).encode()
    assert (
        await env.client.post("/v1/agents", content=ok, headers=account.headers)
    ).status_code == 201


async def test_unknown_route_and_method_use_the_envelope(sqlite_env: Env) -> None:
    env = sqlite_env
    account = await env.account()
    assert_error(await env.client.get("/v1/nothing", headers=account.headers), 404, "not_found")
    r = await env.client.patch("/v1/agents", headers=account.headers)
    assert_error(r, 405, "method_not_allowed")


async def test_request_ids(sqlite_env: Env) -> None:
    env = sqlite_env
    r1 = await env.client.get("/healthz")
    r2 = await env.client.get("/healthz")
    assert r1.headers["x-request-id"] != r2.headers["x-request-id"]
    r = await env.client.get("/healthz", headers={"X-Request-Id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    r = await env.client.get("/healthz", headers={"X-Request-Id": "bad id with spaces"})
    assert r.headers["x-request-id"].startswith("req_")
    assert (await env.client.get("/v1/agents")).headers["x-request-id"]


async def test_crash_is_an_enveloped_500_without_details(
    sqlite_url: str, fake_twilio: Any, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async def boom(request: Any) -> Any:
        raise RuntimeError("SELECT secret FROM accounts -- password=hunter2")

    settings = make_settings(sqlite_url, fake_twilio[1], tmp_path)
    app = create_app(settings, extra_routes=[Route("/boom", boom)], migrate=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c,
    ):
        r = await c.get("/boom")
    err = assert_error(r, 500, "internal_error")
    assert err["type"] == "server_error"
    assert "hunter2" not in r.text and "SELECT" not in r.text and "Traceback" not in r.text
    assert err["details"]["request_id"] == r.headers["x-request-id"]


async def test_healthz_and_metrics(sqlite_env: Env) -> None:
    env = sqlite_env
    r = await env.client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok", "database": "ok"}
    account, agent, _ = await env.ready()
    await env.client.post(
        "/v1/calls/outbound",
        json={"agent_id": agent["agent_id"], "to_number": "+15005550006"},
        headers=account.headers,
    )
    text = (await env.client.get("/metrics")).text
    assert "# TYPE nixflex_http_requests_total counter" in text
    assert (
        'nixflex_http_requests_total{method="POST",route="/v1/calls/outbound",status="201"}' in text
    )
    assert 'nixflex_outbound_calls_total{outcome="created"} 1' in text
    assert "nixflex_http_request_duration_seconds_bucket" in text
    assert "nixflex_calls_in_flight" in text


async def test_openapi_document_matches_the_routes(sqlite_env: Env) -> None:
    env = sqlite_env
    doc = (await env.client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.1")
    documented = {
        (path, method.upper())
        for path, item in doc["paths"].items()
        for method in item
        if method != "parameters"
    }
    served = set()
    for route in env.app.routes:
        if isinstance(route, Route) and route.path != "/openapi.json":
            for method in route.methods or ():
                if method != "HEAD":
                    served.add((route.path, method))
    assert documented == served
    # the agent schema lists exactly the accepted agent fields
    props = set(doc["components"]["schemas"]["AgentInput"]["properties"])
    from nixflex_engine.api.fields import AGENT_FIELD_NAMES

    assert props == AGENT_FIELD_NAMES
    outbound = doc["components"]["schemas"]["OutboundCallRequest"]["properties"]
    from nixflex_engine.calls.outbound import OUTBOUND_FIELDS

    assert set(outbound) == OUTBOUND_FIELDS


async def test_unicode_and_huge_values(sqlite_env: Env) -> None:
    env = sqlite_env
    account, agent, _ = await env.ready()
    metadata = {"ключ": "значение", "emoji": "🚀" * 1000, "sql": "'; DROP TABLE calls; --"}
    r = await env.client.post(
        "/v1/calls/outbound",
        json={
            "agent_id": agent["agent_id"],
            "to_number": "+15005550006",
            "metadata": metadata,
            "dynamic_vars": {"名前": "さくら"},
        },
        headers=account.headers,
    )
    assert r.status_code == 201, r.text
    record = (
        await env.client.get(f"/v1/calls/{r.json()['call_id']}", headers=account.headers)
    ).json()
    assert record["metadata"] == metadata and record["dynamic_vars"] == {"名前": "さくら"}
    r = await env.client.get("/v1/calls/' OR 1=1 --", headers=account.headers)
    assert_error(r, 404, "call_not_found")


async def test_rotation_across_nodes(sqlite_url: str, fake_twilio: Any, tmp_path: Any) -> None:
    """Two nodes on one database: the rotating node refuses the old secret at once; the other
    accepts the new secret at once, and the old one only while its cached key record is
    younger than auth_cache_seconds (0 = never)."""
    for ttl in (0.0, 30.0):
        async for a in start_env(sqlite_url, fake_twilio, tmp_path, auth_cache_seconds=ttl):
            async for b in start_env(sqlite_url, fake_twilio, tmp_path, auth_cache_seconds=ttl):
                account = await a.account()
                old = account.headers
                assert (await b.client.get("/v1/agents", headers=old)).status_code == 200
                new = (await a.client.post("/v1/keys/rotate", headers=old)).json()
                new_headers = {"Authorization": f"Bearer {account.key_id}:{new['key_secret']}"}
                assert_error(await a.client.get("/v1/agents", headers=old), 401, "invalid_api_key")
                stale = await b.client.get("/v1/agents", headers=old)
                if ttl == 0:
                    assert_error(stale, 401, "invalid_api_key")
                else:
                    assert stale.status_code == 200  # bounded by auth_cache_seconds
                assert (await b.client.get("/v1/agents", headers=new_headers)).status_code == 200
                # the new secret made b re-read the key: the old one now fails there too
                assert_error(await b.client.get("/v1/agents", headers=old), 401, "invalid_api_key")


async def test_healthz_503_when_the_database_is_down(fake_twilio: Any, tmp_path: Any) -> None:
    settings = make_settings(
        "postgresql+asyncpg://nobody:nothing@127.0.0.1:9/none", fake_twilio[1], tmp_path
    )
    app = create_app(settings, migrate=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c,
    ):
        r = await c.get("/healthz")
        assert_error(r, 503, "database_unavailable")
        assert "nobody" not in r.text and "nothing" not in r.text
        assert "nixflex_up 0.0" in (await c.get("/metrics")).text
        r = await c.get("/v1/agents", headers={"Authorization": "Bearer nxf_x:nxfs_y"})
        err = assert_error(r, 500, "internal_error")
        assert "nothing" not in r.text and "asyncpg" not in r.text
        assert err["type"] == "server_error"
