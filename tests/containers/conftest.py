"""Container tests run real runc (and Podman where it installs) over real lzfs mounts and real
CRIU; each skips with the reason where its runtime, CRIU or FUSE cannot run here."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from lzfs.testing.container import PodmanContainer, RuncContainer, runtime_unusable_reason
from lzfs.testing.criu import criu_unusable_reason
from tests.conftest import fuse_unusable_reason


def _containers(tmp_path: Path, kind: type, prefix: str, reason: str | None):
    """Start containers of ``kind`` holding ``mib`` MiB; each is removed after the test."""
    if reason:
        pytest.skip(reason)
    started: list = []

    def start(mib: int = 48, seed: int = 1):
        c = kind(tmp_path / f"{prefix}{len(started)}", f"lzfs-test-{uuid.uuid4().hex[:12]}",
                 mib=mib, seed=seed)
        started.append(c)
        c.start()
        return c

    yield start
    for c in started:
        c.remove()


@pytest.fixture
def runc_container(tmp_path: Path):
    """Start runc containers holding ``mib`` MiB; each is removed after the test."""
    yield from _containers(tmp_path, RuncContainer, "c", runtime_unusable_reason("runc")
                           or criu_unusable_reason() or fuse_unusable_reason())


@pytest.fixture
def podman_container(tmp_path: Path):
    """Like runc_container, through Podman (which drives runc)."""
    yield from _containers(tmp_path, PodmanContainer, "p", runtime_unusable_reason("podman")
                           or runtime_unusable_reason("runc") or criu_unusable_reason()
                           or fuse_unusable_reason())
