"""The long run: the exerciser (exerciser.py) with fresh seeds for as long as it is given,
through every layer and mode in turn, with a share of crash rounds, then the property tests
with fresh Hypothesis draws. A failure prints its seed and the shortest operation sequence
that still fails (replayed on fresh stores), and is appended to
bench-results/soak-failures.jsonl; the figures of the run go to bench-results/soak.json.

CI runs the same exerciser with fixed seeds (tests/*/test_exerciser*.py); this finds new
cases, which are then fixed and pinned there.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from lzfs.testing.exercise_targets import MODES, MountTarget, make_target
from lzfs.testing.exerciser import Failure, Op, run_crash_seed, run_ops, run_seed, shrink

RESULTS = Path("bench-results")
PROPERTY_TESTS = ["tests/unit/test_filemap.py", "tests/unit/test_codec.py",
                  "tests/unit/test_chunker.py", "tests/unit/test_store.py"]


def _fresh_seed() -> int:
    return int.from_bytes(os.urandom(6), "little")


def _work(base: Path) -> Path:
    return Path(tempfile.mkdtemp(dir=base))


def _shrunk(layer: str, mode: str, failure: Failure, base: Path, budget: float) -> list[Op]:
    def fails(ops: list[Op]) -> bool:
        work = _work(base)
        target = make_target(layer, work, mode)
        try:
            return run_ops(target, ops, failure.seed) is not None
        finally:
            target.close_all()
            shutil.rmtree(work, ignore_errors=True)

    ops = [o for o in failure.ops if o[0] != "check"]
    return shrink(fails, ops, budget) if fails(ops) else failure.ops


def _record(failure: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / "soak-failures.jsonl", "a") as f:
        f.write(json.dumps(failure) + "\n")


def soak(minutes: float, layers: list[str], modes: list[str], count: int, crash_every: int,
         shrink_budget: float, properties: bool) -> int:
    deadline = time.monotonic() + minutes * 60
    base = Path(tempfile.mkdtemp(prefix="lzfs-soak-", dir="/var/tmp"))
    combos = [(layer, mode) for layer in layers for mode in modes]
    runs: Counter[str] = Counter()
    ops_run: Counter[str] = Counter()
    failures: list[dict] = []
    started = time.time()
    i = plain = crashes = 0
    try:
        while time.monotonic() < deadline:
            seed = _fresh_seed()
            crash = "mount" in layers and crash_every and i % crash_every == crash_every - 1
            i += 1
            if crash:
                layer, mode = "mount", modes[crashes % len(modes)]
                crashes += 1
            else:
                layer, mode = combos[plain % len(combos)]
                plain += 1
            key = f"{layer}/{mode}" + ("/crash" if crash else "")
            work = _work(base)
            target = make_target(layer, work, mode)
            try:
                if crash:
                    assert isinstance(target, MountTarget)
                    n, failure = run_crash_seed(target, seed, kills=6,
                                                names_with_content=target.names_with_content)
                else:
                    ops, failure = run_seed(target, seed, count)
                    n = len(ops)
            finally:
                target.close_all()
            runs[key] += 1
            ops_run[key] += n
            print(f"[soak] {key} seed {seed}: {n} operations, "
                  f"{'ok' if failure is None else 'FAILED'}", flush=True)
            if failure is None:
                shutil.rmtree(work, ignore_errors=True)
                continue
            print(failure.describe(), flush=True)
            shrunk = failure.ops if crash else _shrunk(layer, mode, failure, base,
                                                       shrink_budget)
            print(f"[soak] shrunk to {len(shrunk)} operations (seed {seed}, {key}):\n"
                  f"{json.dumps(shrunk)}", flush=True)
            rec = {"layer": layer, "mode": mode, "crash": bool(crash), "seed": seed,
                   "error": failure.error, "ops": shrunk, "work": str(work)}
            failures.append(rec)
            _record(rec)
        prop = None
        if properties:
            env = dict(os.environ, LZFS_HYPOTHESIS="fresh")
            res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p",
                                  "no:cacheprovider", *PROPERTY_TESTS], env=env)
            prop = res.returncode
            print(f"[soak] property tests with fresh draws: "
                  f"{'passed' if prop == 0 else 'FAILED'}", flush=True)
    finally:
        if not failures:
            shutil.rmtree(base, ignore_errors=True)
    summary = {"started": time.strftime("%Y-%m-%d %H:%M", time.localtime(started)),
               "minutes": round((time.time() - started) / 60, 1),
               "runs": dict(runs), "operations": dict(ops_run),
               "total_operations": sum(ops_run.values()), "failures": failures,
               "property_tests_fresh": None if prop is None else prop == 0}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "soak.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "failures"}, indent=1))
    print(f"[soak] {len(failures)} failures" + ("" if not failures else
                                                  f": {RESULTS / 'soak-failures.jsonl'}"))
    return 1 if failures or prop else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("minutes", type=float, help="how long to draw fresh seeds")
    p.add_argument("--layers", default="mount,ops",
                   help="where the operations go: mount (a real FUSE mount), ops (the "
                        "Operations layer without the kernel); default both")
    p.add_argument("--modes", default=",".join(MODES),
                   help=f"store modes, comma separated (default {','.join(MODES)})")
    p.add_argument("--ops", type=int, default=400, help="operations per seed (default 400)")
    p.add_argument("--crash-every", type=int, default=4,
                   help="every Nth run is a crash run on a mount: six SIGKILLs of the daemon "
                        "at random points (0: none; default 4)")
    p.add_argument("--shrink-minutes", type=float, default=10,
                   help="time spent shrinking a failure (default 10)")
    p.add_argument("--no-properties", action="store_true",
                   help="skip the property tests with fresh Hypothesis draws at the end")
    a = p.parse_args(argv)
    return soak(a.minutes, a.layers.split(","), a.modes.split(","), a.ops, a.crash_every,
                a.shrink_minutes * 60, not a.no_properties)


if __name__ == "__main__":
    sys.exit(main())
