"""Tests that run real CRIU skip (with the reason) where it cannot run. The `workload`
fixture is in tests/conftest.py (the object-store tests use it too)."""

from __future__ import annotations

import pytest

from lzfs.testing.criu import criu_unusable_reason
from tests.conftest import fuse_unusable_reason


@pytest.fixture(scope="module", autouse=True)
def _need_criu():
    reason = criu_unusable_reason() or fuse_unusable_reason()
    if reason:
        pytest.skip(reason)
