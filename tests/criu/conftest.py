"""Fixtures for tests that run real CRIU: skip (with the reason) where it cannot run, and
start workload processes that are always stopped afterwards."""

from __future__ import annotations

import pytest

from lzfs.testing.criu import Workload, criu_unusable_reason
from tests.conftest import fuse_unusable_reason


@pytest.fixture(scope="module", autouse=True)
def _need_criu():
    reason = criu_unusable_reason() or fuse_unusable_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def workload(tmp_path):
    """start(**kw) -> a running Workload (see lzfs.testing.criu.Workload.start)."""
    started: list[Workload] = []

    def start(**kw) -> Workload:
        w = Workload.start(tmp_path / f"ctl{len(started)}", **kw)
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()
