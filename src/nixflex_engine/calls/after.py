"""After a call's record is final: post-call analysis, then what hangs off the final record.

:class:`AfterCallWork` is the session's ``after_call`` hook. For a call that connected and
lasted long enough (:func:`~nixflex_engine.calls.analysis.should_analyse`) it runs one Claude
analysis and writes ``call_summary``, ``caller_sentiment``, ``call_successful`` and
``extracted_data`` onto the record; a failed analysis leaves them null and never loses the
call. Then each ``on_final`` callback runs with the completed record (webhook delivery
hooks in here).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anthropic

from nixflex_engine.calls.analysis import analyse_call, record_fields, should_analyse
from nixflex_engine.calls.run import CallOutcome
from nixflex_engine.log import get_logger, log_event
from nixflex_engine.store.repositories import CallRecord, Repositories

__all__ = ["AfterCallWork", "OnFinal"]

_log = get_logger("nixflex_engine.calls")

#: Runs with the call's complete record (analysis included).
OnFinal = Callable[[CallRecord], Awaitable[None]]


class AfterCallWork:
    """Analysis, then the ``on_final`` callbacks, for each finished call."""

    def __init__(
        self,
        *,
        repos: Repositories,
        client: anthropic.AsyncAnthropic | None,
        default_model: str,
        on_final: Sequence[OnFinal] = (),
    ) -> None:
        self._repos = repos
        self._client = client
        self._default_model = default_model
        self._on_final = list(on_final)

    def add_on_final(self, callback: OnFinal) -> None:
        """Also run ``callback`` with each complete record."""
        self._on_final.append(callback)

    async def __call__(self, record: CallRecord, outcome: CallOutcome | None) -> None:
        record = await self._analyse(record) or record
        for callback in self._on_final:
            try:
                await callback(record)
            except Exception as exc:
                log_event(
                    _log,
                    "call.on_final_failed",
                    level=logging.ERROR,
                    call_id=record.call_id,
                    error=repr(exc),
                    exc_info=exc,
                )

    async def _analyse(self, record: CallRecord) -> CallRecord | None:
        if self._client is None:
            return None
        if not should_analyse(
            connected=record.answered_at is not None,
            duration_seconds=record.duration_seconds,
            ended_reason=record.ended_reason,
            voicemail_detected=record.voicemail_detected,
            voicemail_action=record.voicemail_action,
            transcript=record.transcript,
        ):
            return None
        agent = await self._repos.agents.get(record.agent_id)
        config: dict[str, Any] = agent.config if agent is not None else {}
        analysis = await analyse_call(
            self._client,
            model=str(config.get("llm_model") or self._default_model),
            transcript=record.transcript,
            extraction_schema=config.get("extraction_schema") or None,
            agent_prompt=config.get("system_prompt"),
            call_purpose=record.prompt,
            language=config.get("language"),
            ended_reason=record.ended_reason,
            duration_seconds=record.duration_seconds,
            call_id=record.call_id,
        )
        return await self._repos.calls.update_call(record.call_id, **record_fields(analysis))
