"""The random-operations exerciser through the Operations layer, without the kernel: fixed
seeds and every pinned failure, in each store mode (a local store compressing as it goes, one
staging every write, an object-store node over a file:// bucket). tests/fuse/test_exerciser_mount.py
runs it through a real mount; scripts/soak draws fresh seeds for as long as it is given."""

from __future__ import annotations

import pytest

from lzfs.testing.exercise_targets import MODES, OpsTarget
from lzfs.testing.exerciser import run_ops, run_seed, shrink
from tests.exerciser_cases import PINNED

SEEDS = (1, 2, 3)
OPS = 300


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("seed", SEEDS)
def test_random_operations_match_the_model(tmp_path, mode, seed):
    target = OpsTarget(tmp_path, mode)
    try:
        ops, failure = run_seed(target, seed, OPS)
    finally:
        target.close_all()
    assert failure is None, failure.describe()
    assert len(ops) == OPS + 1


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", sorted(PINNED))
def test_pinned_failures_stay_fixed(tmp_path, mode, case):
    target = OpsTarget(tmp_path, mode)
    try:
        failure = run_ops(target, PINNED[case])
    finally:
        target.close_all()
    assert failure is None, failure.describe()


def test_shrinking_keeps_only_the_operations_a_failure_needs():
    ops = [("write", i, 1, "rand", i) for i in range(40)]

    def fails(trial):  # fails while both the 7th and the 31st operation are in
        return ops[7] in trial and ops[31] in trial

    assert shrink(fails, ops) == [ops[7], ops[31]]
