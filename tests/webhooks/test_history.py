"""``CallRepository.history_for`` on SQLite and PostgreSQL: this account's completed, summarised
calls to the number, newest first, across its agents, never another account's; and the prompt
block they make."""

from __future__ import annotations

import asyncio

from nixflex_engine.processors.prompt import HISTORY_SECTION_TITLE, build_system_prompt
from nixflex_engine.store.repositories import CallRecord, Repositories, utcnow
from webhooks.support import Party, party, placed_call

TO = "+15005550123"


async def _done(
    repos: Repositories,
    p: Party,
    summary: str | None,
    *,
    to: str = TO,
    status: str = "completed",
    reason: str = "agent_hangup",
    successful: bool | None = True,
) -> CallRecord:
    call = await placed_call(repos, p, to_number=to)
    assert await repos.calls.finish_call(
        call.call_id, status, reason, answered_at=utcnow(), outbox=False
    )
    if summary is not None:
        await repos.calls.update_call(
            call.call_id, call_summary=summary, call_successful=successful
        )
    await asyncio.sleep(0.01)  # distinct creation times
    record = await repos.calls.get(call.call_id)
    assert record is not None
    return record


async def test_history_is_this_accounts_summarised_calls_newest_first(
    repos: Repositories,
) -> None:
    a = await party(repos, agent_url=None)
    # a second agent of the same account (deleted since: its calls stay in the history)
    second = await repos.agents.create(a.account_id, {"name": "B", "system_prompt": "Hi"})
    a2 = Party(a.account_id, a.key_secret, second.agent_id, a.number)
    other = await party(repos, agent_url=None)

    oldest = await _done(repos, a, "First contact: asked to call back next week.")
    await _done(repos, a, None)  # no summary (analysis failed / too short): left out
    await _done(repos, a, "Busy line.", status="busy", reason="busy")  # not completed
    await _done(repos, other, "Another account's secret talk.")
    await _done(repos, a, "Different number.", to="+15005550999")
    middle = await _done(repos, a2, "Second agent: confirmed the address.", successful=None)
    assert await repos.agents.delete(second.agent_id, a.account_id)
    newest = await _done(
        repos, a, "Caller declined politely.", successful=False, reason="caller_hangup"
    )
    current = await placed_call(repos, a)

    entries = await repos.calls.history_for(a.account_id, TO, limit=10, before=current)
    assert [e.summary for e in entries] == [
        "Caller declined politely.",
        "Second agent: confirmed the address.",
        "First contact: asked to call back next week.",
    ]
    assert [e.outcome for e in entries] == [
        "unsuccessful, ended: caller_hangup",
        "ended: agent_hangup",
        "successful, ended: agent_hangup",
    ]
    assert entries[0].date == newest.ended_at and entries[2].date == oldest.ended_at
    assert middle.ended_at is not None

    # limit keeps the newest; 0 turns it off
    two = await repos.calls.history_for(a.account_id, TO, limit=2, before=current)
    assert [e.summary for e in two] == [entries[0].summary, entries[1].summary]
    assert await repos.calls.history_for(a.account_id, TO, limit=0, before=current) == []

    # the other account sees only its own call
    mine = await repos.calls.history_for(other.account_id, TO, limit=10)
    assert [e.summary for e in mine] == ["Another account's secret talk."]

    # "before" leaves out the call itself and anything placed after it
    assert [
        e.summary for e in await repos.calls.history_for(a.account_id, TO, limit=10, before=oldest)
    ] == []

    prompt = build_system_prompt("You are Anna.", history=entries)
    block = prompt.split(HISTORY_SECTION_TITLE, 1)[1]
    assert block.index("Caller declined") < block.index("Second agent") < block.index("First")
    assert "Another account" not in prompt
