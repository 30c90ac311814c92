"""Webhook rules, pure: signing, the retry schedule, and which URLs may receive webhooks.

Signature (api.md): header ``X-Nixflex-Signature: t=<unix seconds>,v1=<hex>`` where ``v1`` is
HMAC-SHA256 keyed with the account's key secret over ``"<t>." + raw body bytes`` — exactly
what the official SDK's ``verify_webhook_signature`` checks.

Retries: exponential backoff with jitter on timeout, connection error or non-2xx — 10 s,
1 min, 5 min, 30 min, 2 h, 6 h, then every 6 h until about a day has passed — except for
410 Gone, which means the receiver wants no more deliveries.

SSRF: webhook URLs must be http(s), and unless the operator allows it, must not point at a
private, loopback, link-local, multicast, reserved or unspecified address — checked on the
literal host at registration and on every resolved address at delivery.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import random
from collections.abc import Iterable
from urllib.parse import urlsplit

__all__ = [
    "RETRY_SCHEDULE_S",
    "SIGNATURE_HEADER",
    "UnsafeWebhookURL",
    "check_address_allowed",
    "check_resolved_addresses",
    "check_webhook_url",
    "next_retry_delay_s",
    "should_retry",
    "sign_webhook",
    "verify_webhook",
]

SIGNATURE_HEADER = "X-Nixflex-Signature"

#: Base delay before attempt n+1 (seconds); the last one repeats until the deadline.
RETRY_SCHEDULE_S: tuple[int, ...] = (10, 60, 300, 1800, 7200, 21600)

#: Give up once this long has passed since the first attempt (about a day).
RETRY_DEADLINE_S = 26 * 3600


class UnsafeWebhookURL(ValueError):
    """The URL may not receive webhooks; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def sign_webhook(secret: str, body: bytes, timestamp: int) -> str:
    """The ``X-Nixflex-Signature`` header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify_webhook(
    secret: str, body: bytes, header: str | None, *, now: int, tolerance_s: int = 300
) -> bool:
    """Whether ``header`` is a valid, fresh ``X-Nixflex-Signature`` for ``body``.

    What a receiver runs (the official SDK's ``verify_webhook_signature`` does the same):
    parse ``t`` and ``v1``, refuse a timestamp more than ``tolerance_s`` from ``now`` (a
    replay), and compare the HMAC in constant time.
    """
    if not header or not secret:
        return False
    parts = dict(p.strip().split("=", 1) for p in header.split(",") if "=" in p)
    try:
        t = int(parts.get("t", ""))
    except ValueError:
        return False
    if abs(now - t) > tolerance_s:
        return False
    expected = sign_webhook(secret, body, t).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


def next_retry_delay_s(
    attempts_made: int,
    *,
    elapsed_s: float = 0.0,
    rng: random.Random | None = None,
    schedule_s: tuple[float, ...] = RETRY_SCHEDULE_S,
    deadline_s: float = RETRY_DEADLINE_S,
) -> float | None:
    """Seconds to wait before the next attempt, or ``None`` to give up.

    ``attempts_made`` counts attempts so far (≥ 1). The delay has ±20 % jitter, so many
    deliveries failing together do not retry together. ``schedule_s`` and ``deadline_s``
    default to the production schedule (benchmarks pass a short one).
    """
    if attempts_made < 1:
        return 0.0
    base = schedule_s[min(attempts_made - 1, len(schedule_s) - 1)]
    if elapsed_s + base > deadline_s:
        return None
    jitter = (rng or random.Random()).uniform(0.8, 1.2)
    return base * jitter


def should_retry(status_code: int | None) -> bool:
    """Whether a response (``None``: timeout or connection error) deserves another attempt."""
    if status_code is None:
        return True
    if 200 <= status_code < 300:
        return False
    return status_code != 410


def check_address_allowed(address: str) -> None:
    """Raise :class:`UnsafeWebhookURL` if ``address`` (an IP literal) is not public."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError as exc:
        raise UnsafeWebhookURL(f"not an IP address: {address!r}") from exc
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    ):
        raise UnsafeWebhookURL(f"address {ip} is not public")


def check_webhook_url(url: str, *, allow_private: bool = False) -> str:
    """Validate a webhook URL at registration; returns it normalised (stripped).

    Hostnames are accepted here (they are resolved and checked at delivery); IP literals and
    ``localhost`` are checked now.
    """
    url = url.strip()
    if len(url) > 2048:
        raise UnsafeWebhookURL("URL longer than 2048 characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeWebhookURL(f"not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise UnsafeWebhookURL("URL must be http or https")
    host = parts.hostname
    if not host:
        raise UnsafeWebhookURL("URL has no host")
    if parts.username or parts.password:
        raise UnsafeWebhookURL("URL must not carry credentials")
    if port == 0:
        raise UnsafeWebhookURL("port 0 is not allowed")
    if allow_private:
        return url
    lowered = host.lower().rstrip(".")
    if lowered == "localhost" or lowered.endswith(".localhost"):
        raise UnsafeWebhookURL("localhost is not allowed")
    try:
        ipaddress.ip_address(lowered)
    except ValueError:
        return url  # a name: resolved and checked at delivery
    check_address_allowed(lowered)
    return url


def check_resolved_addresses(addresses: Iterable[str], *, allow_private: bool = False) -> None:
    """At delivery: refuse if any address the host resolved to is not public."""
    if allow_private:
        return
    seen = False
    for address in addresses:
        seen = True
        check_address_allowed(address)
    if not seen:
        raise UnsafeWebhookURL("host did not resolve")
