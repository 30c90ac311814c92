"""The one settings object.

Every setting is read from the environment with the prefix ``NIXFLEX_`` (for example
``NIXFLEX_DATABASE_URL``) or from a ``.env`` file in the working directory. Code never reads
``os.environ`` itself: it receives a :class:`Settings` instance.

Provider base URLs choose where the real SDKs connect. Leave them unset for the real
services; point them at the sandbox (``nixflex-engine sandbox``) for offline runs. No code
path exists only for tests: the sandbox is chosen by configuration alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["Settings"]


class Settings(BaseSettings):
    """Engine configuration. Units are in the names (``_seconds``, ``_ms``, ``_per_minute``)."""

    model_config = SettingsConfigDict(
        env_prefix="NIXFLEX_", env_file=".env", extra="ignore", validate_default=True
    )

    # --- deployment -----------------------------------------------------------------------
    dev_mode: bool = Field(
        False,
        description="Development mode: generates and keeps an encryption key under var_dir "
        "when none is given. Never enable in production.",
    )
    host: str = Field("127.0.0.1", description="Interface `nixflex-engine serve` binds to.")
    port: int = Field(8080, ge=0, le=65535, description="Port `nixflex-engine serve` binds to.")
    public_base_url: str = Field(
        "http://127.0.0.1:8080",
        description="Public https:// URL of this node, as Twilio reaches it. Used in TwiML "
        "(as wss://), callback URLs and signature checks. Each node has its own.",
    )
    var_dir: Path = Field(Path("./var"), description="Directory for local state.")
    log_level: str = Field("INFO", description="Minimum log level (DEBUG, INFO, WARNING...).")

    # --- storage --------------------------------------------------------------------------
    database_url: str = Field(
        "sqlite+aiosqlite:///./var/nixflex.db",
        description="SQLAlchemy async URL: sqlite+aiosqlite:///path or "
        "postgresql+asyncpg://user:pass@host/db.",
    )
    recordings_dir: Path = Field(
        Path("./var/recordings"), description="Where call recordings (WAV) are stored."
    )
    encryption_key: SecretStr | None = Field(
        None,
        description="Fernet key (urlsafe base64, 32 bytes) encrypting Twilio tokens and "
        "webhook secrets at rest. Required unless dev_mode is on.",
    )

    # --- accounts and limits ----------------------------------------------------------------
    signup_enabled: bool = Field(False, description="Allow POST /v1/keys without a key.")
    rate_limit_reads_per_minute: int = Field(600, ge=1, description="GET requests per key.")
    rate_limit_writes_per_minute: int = Field(120, ge=1, description="Writes per key.")
    default_max_concurrent_calls: int = Field(
        10, ge=1, description="Calls in flight per account unless the account sets its own."
    )
    concurrent_call_retry_after_seconds: int = Field(
        5,
        ge=1,
        description="Retry-After (seconds) sent with 429 concurrent_call_limit.",
    )
    auth_cache_seconds: float = Field(
        1.0,
        ge=0,
        description="Seconds a node may reuse an API key record it read. A rotated secret "
        "fails at once on the node that rotated it and within this many seconds on other "
        "nodes sharing the database; new secrets always work at once. 0 = read every time.",
    )
    allow_private_webhook_urls: bool = Field(
        False, description="Allow webhook URLs on private or loopback addresses (SSRF guard)."
    )
    webhook_timeout_seconds: float = Field(
        10.0, gt=0, le=60, description="Seconds one webhook attempt may take, all included."
    )
    webhook_lease_seconds: float = Field(
        60.0,
        gt=0,
        description="Seconds a node holds a claimed webhook delivery; must exceed "
        "webhook_timeout_seconds. A node that dies leaves its claims to others after this.",
    )
    webhook_max_concurrency: int = Field(
        16, ge=1, le=1000, description="Webhook attempts in flight at once on one node."
    )
    webhook_poll_interval_seconds: float = Field(
        1.0,
        gt=0,
        description="Seconds between a node's looks for due webhooks (deliveries queued on "
        "the node itself start at once).",
    )
    webhook_retention_days: int = Field(
        30,
        ge=0,
        le=36500,
        description="Days a finished webhook delivery (delivered, failed, gone or refused) and "
        "its attempt log are kept, counted from when it became final; every node's worker "
        "deletes older ones every few minutes, in small batches. Pending deliveries are never "
        "deleted. GET /v1/calls/{call_id}/webhooks shows no history older than this. "
        "0 = keep forever.",
    )

    # --- crash recovery -------------------------------------------------------------------
    reconcile_stale_after_seconds: float = Field(
        30.0,
        gt=0,
        description="A connected call no node has touched (heartbeat) for this long is taken "
        "as lost with its node and reconciled with the carrier. Nodes heartbeat their calls "
        "every third of this.",
    )
    reconcile_ringing_after_seconds: float = Field(
        150.0,
        gt=0,
        description="The same for a call still queued or ringing (nobody heartbeats those: "
        "leave room for the carrier's whole ring time). Must be at least "
        "reconcile_stale_after_seconds.",
    )

    # --- providers --------------------------------------------------------------------------
    twilio_api_base_url: str | None = Field(
        None, description="Twilio REST root; unset = api.twilio.com. Sandbox: http://HOST:PORT"
    )
    deepgram_api_key: SecretStr = Field(SecretStr(""), description="Deepgram API key.")
    deepgram_base_url: str | None = Field(
        None,
        description="Deepgram root for both REST and websockets (http(s)://...; the websocket "
        "scheme is derived); unset = Deepgram's own.",
    )
    anthropic_api_key: SecretStr = Field(SecretStr(""), description="Anthropic API key.")
    anthropic_base_url: str | None = Field(
        None, description="Anthropic API root; unset = api.anthropic.com."
    )
    llm_model: str = Field("claude-haiku-4-5", description="Default Claude model for agents.")

    # --- custom chains ----------------------------------------------------------------------
    allowed_chain_factories: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Chain factories agents may name in chain_factory: exact import paths "
        "(myapp.chains:build) or whole modules (myapp.chains:*), comma-separated or a JSON "
        "list. Empty: none (every agent runs the standard chain).",
    )

    @field_validator("allowed_chain_factories", mode="before")
    @classmethod
    def _factory_list(cls, value: object) -> object:
        from nixflex_engine.calls.factories import check_allowed_entry

        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                value = json.loads(text)
            else:
                value = [part for part in text.split(",") if part.strip()]
        if isinstance(value, list | tuple):
            return [check_allowed_entry(str(item)) for item in value]
        return value

    # --- campaigns ---------------------------------------------------------------------------
    campaign_dispatch_enabled: bool = Field(
        True, description="Run the campaign dispatcher on this node (every node may)."
    )
    campaign_dispatch_interval_seconds: float = Field(
        0.5,
        gt=0,
        description="Seconds between dispatcher passes when nothing wakes it (a call ending "
        "or a campaign launched on this node wakes it at once).",
    )
    campaign_claim_lease_seconds: float = Field(
        60.0,
        gt=0,
        description="Seconds after which a recipient claimed but never turned into a call "
        "row (its node died between claim and dial) is queued again, same attempt.",
    )
    campaign_reconcile_interval_seconds: float = Field(
        10.0, gt=0, description="Seconds between reconciliations of stale campaign claims."
    )

    @model_validator(mode="after")
    def _reconcile_order(self) -> Settings:
        if self.reconcile_ringing_after_seconds < self.reconcile_stale_after_seconds:
            raise ValueError(
                "reconcile_ringing_after_seconds "
                f"({self.reconcile_ringing_after_seconds:g}) must be at least "
                f"reconcile_stale_after_seconds ({self.reconcile_stale_after_seconds:g}): "
                "a call that is still ringing is never taken as lost sooner than a connected one"
            )
        return self

    @field_validator(
        "public_base_url", "twilio_api_base_url", "deepgram_base_url", "anthropic_base_url"
    )
    @classmethod
    def _strip_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value

    @property
    def public_ws_base_url(self) -> str:
        """The public base URL with a websocket scheme (https → wss, http → ws)."""
        base = self.public_base_url
        if base.startswith("https://"):
            return "wss://" + base.removeprefix("https://")
        return "ws://" + base.removeprefix("http://")
