"""Agents: ``POST/GET /v1/agents``, ``GET/PUT/DELETE /v1/agents/{agent_id}``.

PUT is a partial update; every given field is validated before anything is written.
Another account's agent answers 404, as if it did not exist.
"""

from __future__ import annotations

from typing import Any

from starlette.routing import Route

from nixflex_engine.api.errors import ApiError
from nixflex_engine.api.fields import agent_defaults, parse_limit_offset, validate_agent_fields
from nixflex_engine.api.routing import ApiCall, Reply, endpoint
from nixflex_engine.store.repositories import AgentRecord

__all__ = ["agent_json", "routes"]


def iso(value: Any) -> str | None:
    if value is None:
        return None
    text: str = value.isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def agent_json(agent: AgentRecord, numbers: list[str]) -> dict[str, Any]:
    return {
        "agent_id": agent.agent_id,
        **agent.config,
        "phone_numbers": numbers,
        "created_at": iso(agent.created_at),
        "updated_at": iso(agent.updated_at),
    }


def _not_found(agent_id: str) -> ApiError:
    return ApiError(404, "agent_not_found", "No agent with this id.", {"agent_id": agent_id[:100]})


async def create_agent(call: ApiCall) -> Reply:
    services = call.services
    body = await call.json_object()
    clean = validate_agent_fields(
        body,
        creating=True,
        allow_private_webhooks=services.settings.allow_private_webhook_urls,
        allowed_chain_factories=services.settings.allowed_chain_factories,
    )
    config = {**agent_defaults(services.settings.llm_model), **clean}
    agent = await services.repos.agents.create(call.account_id, config)
    return Reply(201, agent_json(agent, []))


async def list_agents(call: ApiCall) -> Reply:
    limit, offset = parse_limit_offset(call.query)
    repos = call.services.repos
    agents, count = await repos.agents.list_page(call.account_id, limit=limit, offset=offset)
    numbers = await repos.agents.phone_numbers_of([a.agent_id for a in agents])
    return Reply(
        200,
        {
            "agents": [agent_json(a, numbers[a.agent_id]) for a in agents],
            "count": count,
            "limit": limit,
            "offset": offset,
        },
    )


async def _owned(call: ApiCall) -> AgentRecord:
    agent_id = call.path_param("agent_id")
    agent = await call.services.repos.agents.get(agent_id)
    if agent is None or agent.account_id != call.account_id:
        raise _not_found(agent_id)
    return agent


async def get_agent(call: ApiCall) -> Reply:
    agent = await _owned(call)
    numbers = await call.services.repos.agents.phone_numbers_of([agent.agent_id])
    return Reply(200, agent_json(agent, numbers[agent.agent_id]))


async def update_agent(call: ApiCall) -> Reply:
    services = call.services
    body = await call.json_object(allow_empty=True)
    agent = await _owned(call)
    clean = validate_agent_fields(
        body,
        creating=False,
        allow_private_webhooks=services.settings.allow_private_webhook_urls,
        allowed_chain_factories=services.settings.allowed_chain_factories,
    )
    updated = await services.repos.agents.replace_config(
        agent.agent_id, call.account_id, {**agent.config, **clean}
    )
    if updated is None:
        raise _not_found(agent.agent_id)
    numbers = await services.repos.agents.phone_numbers_of([agent.agent_id])
    return Reply(200, agent_json(updated, numbers[agent.agent_id]))


async def delete_agent(call: ApiCall) -> Reply:
    agent_id = call.path_param("agent_id")
    if not await call.services.repos.agents.delete(agent_id, call.account_id):
        raise _not_found(agent_id)
    return Reply(200, {"agent_id": agent_id, "deleted": True})


def routes() -> list[Route]:
    return [
        Route("/v1/agents", endpoint(create_agent), methods=["POST"]),
        Route("/v1/agents", endpoint(list_agents), methods=["GET"]),
        Route("/v1/agents/{agent_id}", endpoint(get_agent), methods=["GET"]),
        Route("/v1/agents/{agent_id}", endpoint(update_agent), methods=["PUT"]),
        Route("/v1/agents/{agent_id}", endpoint(delete_agent), methods=["DELETE"]),
    ]
