"""The one-port sandbox app: routing, the Twilio hook, extra routes, the CLI's settings."""

from __future__ import annotations

import httpx
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from nixflex_engine.sandbox.app import build_sandbox_app
from nixflex_engine.sandbox.fake_anthropic import FakeAnthropic
from nixflex_engine.sandbox.fake_deepgram import FakeDeepgram
from nixflex_engine.sandbox.serve import build_from_args, serve_app, serve_sandbox


async def pong(_request: Request) -> PlainTextResponse:
    return PlainTextResponse("pong")


async def test_twilio_hook_and_extra_routes_share_the_port() -> None:
    from nixflex_engine.sandbox.fake_twilio import FakeTwilio

    async with (
        serve_sandbox(twilio_state=FakeTwilio(), extra_routes=[Route("/ping", pong)]) as url,
        httpx.AsyncClient() as http,
    ):
        routes = (await http.get(f"{url}/sandbox/health")).json()["routes"]
        assert {"/v1/listen", "/v1/speak", "/v1/messages", "/ping"} <= set(routes)
        assert any(r.startswith("/2010-04-01/Accounts/") for r in routes)
        assert (await http.get(f"{url}/ping")).text == "pong"
        # A Twilio route answers with Twilio's own auth error, not a 404.
        resp = await http.post(f"{url}/2010-04-01/Accounts/AC123/Calls.json")
        assert resp.status_code == 401


async def test_without_twilio_state_only_the_fakes_are_mounted() -> None:
    app = build_sandbox_app(deepgram=FakeDeepgram(), anthropic=FakeAnthropic())
    async with serve_app(app) as url, httpx.AsyncClient() as http:
        routes = (await http.get(f"{url}/sandbox/health")).json()["routes"]
        assert routes == ["/v1/listen", "/v1/messages", "/v1/speak"]
        assert (await http.get(f"{url}/2010-04-01/Accounts/AC1/Calls.json")).status_code == 404


async def test_cli_flags_configure_the_fakes() -> None:
    app, args = build_from_args(
        ["--port", "0", "--llm-ttft-ms", "5", "--llm-tokens-per-s", "500", "--anthropic-key", "k"]
    )
    assert args.llm_ttft_ms == 5
    body = {"model": "m", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
    async with serve_app(app) as url, httpx.AsyncClient() as http:
        bad = await http.post(f"{url}/v1/messages", json=body, headers={"x-api-key": "no"})
        assert bad.status_code == 401 and bad.json()["error"]["type"] == "authentication_error"
        ok = await http.post(f"{url}/v1/messages", json=body, headers={"x-api-key": "k"})
        assert ok.status_code == 200 and ok.json()["content"][0]["type"] == "text"
