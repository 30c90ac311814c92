"""Where call recordings live: the :class:`RecordingStore` interface and the local directory.

The recorder (:mod:`nixflex_engine.processors.recorder`) writes the two-channel WAV (caller
left, agent right) to :meth:`RecordingStore.spool_path` atomically. After the call,
:meth:`RecordingStore.save` takes it into the store — for :class:`LocalRecordingStore` the
spool path *is* the stored file, so nothing moves; an S3-compatible store would upload it and
remove the spool file. The API serves recordings with :meth:`RecordingStore.stat` and
:meth:`RecordingStore.read` (byte ranges, for HTTP Range requests) and removes them with
:meth:`RecordingStore.delete` when the call is deleted.

:func:`parse_byte_range` is the pure part of Range handling (RFC 9110 §14): one
``bytes=`` range in its three forms; anything else is ignored (whole file), and a range that
starts past the end is unsatisfiable (416).
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

__all__ = [
    "LocalRecordingStore",
    "RangeNotSatisfiable",
    "RecordingInfo",
    "RecordingStore",
    "parse_byte_range",
]

_SAFE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_CHUNK = 64 * 1024


@dataclass(slots=True, frozen=True)
class RecordingInfo:
    size_bytes: int
    modified_at: datetime


@runtime_checkable
class RecordingStore(Protocol):
    """Recordings by call id. Implementations never expose a half-written recording."""

    def spool_path(self, call_id: str) -> Path:
        """Local path the recorder writes the finished WAV to."""
        ...

    async def save(self, call_id: str, source: Path) -> RecordingInfo:
        """Take the WAV at ``source`` as the call's recording (atomically)."""
        ...

    async def stat(self, call_id: str) -> RecordingInfo | None:
        """Size and time of the call's recording, or None when there is none."""
        ...

    def read(self, call_id: str, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes ``start``..``end`` (inclusive) of the recording, in chunks."""
        ...

    async def delete(self, call_id: str) -> bool:
        """Remove the call's recording; True if there was one."""
        ...


class LocalRecordingStore:
    """Recordings as ``<root>/<call_id>.wav`` files."""

    __slots__ = ("root",)

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def spool_path(self, call_id: str) -> Path:
        if not _SAFE_ID.fullmatch(call_id):
            raise ValueError("call id not usable as a file name")
        return self.root / f"{call_id}.wav"

    async def save(self, call_id: str, source: Path) -> RecordingInfo:
        target = self.spool_path(call_id)
        return await asyncio.to_thread(self._save, Path(source), target)

    def _save(self, source: Path, target: Path) -> RecordingInfo:
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.resolve() != target.resolve():
            # Copy to a temp file beside the target, fsync, rename: never half-written.
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
            try:
                with os.fdopen(fd, "wb") as out, source.open("rb") as src:
                    while chunk := src.read(_CHUNK * 16):
                        out.write(chunk)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            source.unlink(missing_ok=True)
        info = self._stat(target)
        if info is None:
            raise FileNotFoundError(f"no recording file for {target.name}")
        return info

    @staticmethod
    def _stat(path: Path) -> RecordingInfo | None:
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not path.is_file():
            return None
        return RecordingInfo(st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    async def stat(self, call_id: str) -> RecordingInfo | None:
        try:
            path = self.spool_path(call_id)
        except ValueError:
            return None
        return await asyncio.to_thread(self._stat, path)

    async def read(self, call_id: str, start: int, end: int) -> AsyncIterator[bytes]:
        path = self.spool_path(call_id)
        handle = await asyncio.to_thread(path.open, "rb")
        try:
            await asyncio.to_thread(handle.seek, start)
            remaining = end - start + 1
            while remaining > 0:
                chunk = await asyncio.to_thread(handle.read, min(_CHUNK, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
                yield chunk
        finally:
            await asyncio.to_thread(handle.close)

    async def delete(self, call_id: str) -> bool:
        try:
            path = self.spool_path(call_id)
        except ValueError:
            return False

        def unlink() -> bool:
            try:
                path.unlink()
            except FileNotFoundError:
                return False
            return True

        return await asyncio.to_thread(unlink)


class RangeNotSatisfiable(ValueError):
    """The Range header asks for bytes the file does not have (416)."""


_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def parse_byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive ``(start, end)`` a Range header asks for, or None for the whole file.

    Supports one ``bytes=`` range: ``a-b``, ``a-`` and the suffix ``-n``. Other units, several
    ranges and malformed values are ignored (the whole file is sent, as RFC 9110 allows).
    Raises :class:`RangeNotSatisfiable` when the range starts at or past the end.
    """
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip().replace(" ", ""))
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # suffix: the last n bytes
        n = int(last)
        if n == 0 or size == 0:
            raise RangeNotSatisfiable(header)
        return max(0, size - n), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None  # invalid: ignored
    if start >= size:
        raise RangeNotSatisfiable(header)
    return start, min(end, size - 1)
