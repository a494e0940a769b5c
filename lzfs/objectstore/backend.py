"""Object-store backends: the small interface the cluster code needs, and two implementations.

``S3Backend`` talks to any S3-compatible service through boto3 (credentials from the usual AWS
environment variables, profile or instance role); ``DirBackend`` keeps the same objects as
files in a directory (a shared file system, or tests without a server). Both make a PUT atomic:
an object either is there whole or not at all, which is what publication relies on.

Every failure surfaces as ``RemoteError`` with one line that names the endpoint and says what to
check: a node must never turn a dead endpoint into a hang or a traceback.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from urllib.parse import urlparse

from lzfs.objectstore.protocol import Backend, NoSuchObject, ObjectInfo, RemoteError, fill


def is_remote(spec: str) -> bool:
    return spec.startswith(("s3://", "file://"))


def open_backend(spec: str, endpoint: str | None = None, profile: str | None = None) -> Backend:
    """``s3://BUCKET/PREFIX`` (with ``endpoint``, or AWS_ENDPOINT_URL) or ``file:///DIR``."""
    u = urlparse(spec)
    if u.scheme == "s3":
        if not u.netloc:
            raise RemoteError(f"{spec}: no bucket; write s3://BUCKET/PREFIX")
        try:
            from lzfs.objectstore.s3 import S3Backend
        except ImportError:
            raise RemoteError("s3:// stores need boto3: pip install 'lzfs[s3]'") from None

        return S3Backend(u.netloc, u.path.strip("/"), endpoint, profile)
    if u.scheme == "file":
        return DirBackend(Path(u.path))
    raise RemoteError(f"{spec}: unknown object store; use s3://BUCKET/PREFIX or file:///DIR")


class DirBackend:
    """Objects as files under a directory; a PUT writes a temporary file and renames it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = f"file://{root}"
        self.spec = self.url  # as lzfs commands take it
        self.endpoint: str | None = None

    def _path(self, key: str) -> Path:
        return self.root / key

    def check(self) -> None:
        if not self.root.is_dir():
            raise RemoteError(f"{self.url}: no such directory")

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)

    def put_file(self, key: str, path: Path) -> None:
        self.put(key, path.read_bytes())

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        try:
            with open(self._path(key), "rb") as f:
                f.seek(offset)
                return f.read() if length is None else f.read(length)
        except FileNotFoundError:
            raise NoSuchObject(f"{self.url}/{key}: no such object") from None

    def get_into(self, key: str, offset: int, buf: memoryview) -> int:
        try:
            with open(self._path(key), "rb", buffering=0) as f:
                f.seek(offset)
                return fill(f.readinto, buf)
        except FileNotFoundError:
            raise NoSuchObject(f"{self.url}/{key}: no such object") from None

    def head(self, key: str) -> ObjectInfo | None:
        try:
            st = self._path(key).stat()
        except FileNotFoundError:
            return None
        return ObjectInfo(key, st.st_size, st.st_mtime)

    def list(self, prefix: str, start_after: str = "") -> list[ObjectInfo]:
        base = self._path(prefix)
        out = []
        top = base if base.is_dir() else base.parent
        for dirpath, _, files in os.walk(top):
            for name in files:
                if name.startswith("."):
                    continue
                p = Path(dirpath) / name
                key = str(p.relative_to(self.root))
                if key.startswith(prefix) and key > start_after:
                    st = p.stat()
                    out.append(ObjectInfo(key, st.st_size, st.st_mtime))
        return sorted(out, key=lambda o: o.key)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def touch(self, key: str) -> None:
        try:
            os.utime(self._path(key))
        except FileNotFoundError:
            raise NoSuchObject(f"{self.url}/{key}: no such object") from None
