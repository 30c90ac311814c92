"""The one-time media-stream token of a call.

A keyed hash of the call's reference under the server key, so the node that dials and the
node that receives the stream agree on it without sharing state; the session also refuses a
token it has seen before.
"""

from __future__ import annotations

from nixflex_engine.crypto import Crypto

__all__ = ["media_stream_token"]


def media_stream_token(crypto: Crypto, call_ref: str) -> str:
    """The token the TwiML ``<Stream>`` carries for call ``call_ref``."""
    return crypto.hash_secret(f"media-stream:{call_ref}")
