"""The random-operations exerciser through a real FUSE mount (writes, shared-mmap writes with
msync, truncates, fsync, reopen, rename and links, remounts with fsck, settle and gc), in each
store mode, with fixed seeds and every pinned failure; and its crash variant, the daemon
killed with SIGKILL at random points: every state after a remount is one the file went through
since its last fsync, and fsck finds the store clean."""

from __future__ import annotations

import pytest

from lzfs.testing.exercise_targets import MODES, MountTarget
from lzfs.testing.exerciser import run_crash_seed, run_ops, run_seed
from tests.conftest import fuse_unusable_reason
from tests.exerciser_cases import PINNED

OPS = 250


@pytest.fixture
def target_in(tmp_path):
    reason = fuse_unusable_reason()
    if reason:
        pytest.skip(reason)
    made: list[MountTarget] = []

    def make(mode: str) -> MountTarget:
        made.append(MountTarget(tmp_path / f"t{len(made)}", mode))
        return made[-1]

    yield make
    for t in made:
        t.close_all()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("seed", (1, 2))
def test_random_operations_through_a_mount_match_the_model(target_in, mode, seed):
    _ops, failure = run_seed(target_in(mode), seed, OPS)
    assert failure is None, failure.describe()


@pytest.mark.parametrize("case", sorted(PINNED))
def test_pinned_failures_stay_fixed_through_a_mount(target_in, case):
    failure = run_ops(target_in("plain"), PINNED[case])
    assert failure is None, failure.describe()


@pytest.mark.parametrize("mode", MODES)
def test_a_daemon_killed_at_random_points_keeps_every_fsynced_state(target_in, mode):
    t = target_in(mode)
    count, failure = run_crash_seed(t, seed=7, kills=5,
                                    names_with_content=t.names_with_content)
    assert failure is None, failure.describe() + "\n" + t.log()[-3000:]
    assert count > 20
