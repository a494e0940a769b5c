"""What the cluster code asks of an object store (``Backend``), what it answers with, how it
fails, and the counters every backend keeps: the vocabulary shared by backend.py (which picks
and implements one) and s3.py, kept apart so that neither imports the other's module."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from lzfs.errors import LzfsError


class RemoteError(LzfsError):
    """The object store cannot be reached or refused a request."""


class NoSuchObject(RemoteError):
    """A GET or HEAD named an object that is not there."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str        # relative to the backend's prefix
    size: int
    mtime: float    # seconds since the epoch (LastModified)


class Backend(Protocol):
    """What the cluster code asks of an object store. Keys are relative to the prefix."""

    url: str
    spec: str  # the store as lzfs commands take it (with --endpoint ENDPOINT when that is set)
    endpoint: str | None

    def put(self, key: str, data: bytes) -> None: ...
    def put_file(self, key: str, path: Path) -> None: ...
    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes: ...
    # up to len(buf) bytes from offset into buf, the count (0 past the end): the segment
    # cache reuses its buffers, as fresh memory is what a GET of 4 MiB costs most
    def get_into(self, key: str, offset: int, buf: memoryview) -> int: ...
    def head(self, key: str) -> ObjectInfo | None: ...
    def list(self, prefix: str, start_after: str = "") -> list[ObjectInfo]: ...
    def delete(self, key: str) -> None: ...
    def touch(self, key: str) -> None: ...
    def check(self) -> None: ...


def fill(readinto: Callable[[memoryview], int | None], buf: memoryview) -> int:
    """Read into ``buf`` until it is full or the source ends (a 0 read); the count. Files and
    sockets both hand back less than asked for at times."""
    got = 0
    while got < len(buf):
        k = readinto(buf[got:])
        if not k:
            break
        got += k
    return got


class Counters:
    """GETs and bytes fetched, for the bench row and `.lzfs/stats` (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.gets = 0
        self.get_bytes = 0
        self.puts = 0
        self.put_bytes = 0
        self.manifest_gets = 0  # manifests fetched (lazily, one per snapshot looked into)
        # unix times the first and the last pack GET returned (the bench's time to the first
        # and the last byte of a restore on a cold node)
        self.first_get_at = 0.0
        self.last_get_at = 0.0

    def got_manifest(self, n: int) -> None:
        with self._lock:
            self.manifest_gets += 1
            self.get_bytes += n

    def got(self, n: int) -> None:
        now = time.time()
        with self._lock:
            self.gets += 1
            self.get_bytes += n
            self.first_get_at = self.first_get_at or now
            self.last_get_at = now

    def put(self, n: int) -> None:
        with self._lock:
            self.puts += 1
            self.put_bytes += n
