"""Random sequences of file operations applied to a real mount and to a plain directory give
identical trees and contents, before and after a remount (property-based)."""

from __future__ import annotations

import itertools
import os
import random
import shutil
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

NAMES = ["a", "b", "pages-1.img", "sub/c", "sub/d"]

ops = st.lists(st.one_of(
    st.tuples(st.just("write"), st.sampled_from(NAMES), st.integers(0, 400_000),
              st.integers(0, 300_000), st.sampled_from(["rand", "zero", "text"]),
              st.integers(0, 99)),
    st.tuples(st.just("append"), st.sampled_from(NAMES), st.integers(0, 300_000),
              st.sampled_from(["rand", "zero", "text"]), st.integers(0, 99)),
    st.tuples(st.just("truncate"), st.sampled_from(NAMES), st.integers(0, 500_000)),
    st.tuples(st.just("create_trunc"), st.sampled_from(NAMES)),
    st.tuples(st.just("unlink"), st.sampled_from(NAMES)),
    st.tuples(st.just("rename"), st.sampled_from(NAMES), st.sampled_from(NAMES)),
    st.tuples(st.just("symlink"), st.sampled_from(NAMES), st.text("xyz./", max_size=8)),
), min_size=1, max_size=15)


def _data(kind: str, n: int, seed: int) -> bytes:
    if kind == "zero":
        return bytes(n)
    if kind == "text":
        return (b"CRIU image %d\n" % seed * (n // 13 + 1))[:n]
    return random.Random(seed).randbytes(n)


def _apply(root: Path, op: tuple) -> str:
    """Apply one op under root; returns an outcome string (errors included) to compare."""
    kind, name = op[0], op[1]
    p = root / name
    try:
        p.parent.mkdir(exist_ok=True)
        if kind == "write":
            _, _, off, n, dkind, seed = op
            fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                os.pwrite(fd, _data(dkind, n, seed), off)
            finally:
                os.close(fd)
        elif kind == "append":
            _, _, n, dkind, seed = op
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                os.write(fd, _data(dkind, n, seed))
            finally:
                os.close(fd)
        elif kind == "truncate":
            os.truncate(p, op[2])
        elif kind == "create_trunc":
            os.close(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))
        elif kind == "unlink":
            os.unlink(p)
        elif kind == "rename":
            (root / op[2]).parent.mkdir(exist_ok=True)
            os.rename(p, root / op[2])
        elif kind == "symlink":
            os.symlink(op[2] or ".", p)
        return "ok"
    except OSError as exc:
        return f"errno {exc.errno}"


def _tree(root: Path) -> dict[str, object]:
    out: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            p = Path(dirpath) / d
            rel = str(p.relative_to(root))
            out[rel] = "link:" + os.readlink(p) if p.is_symlink() else "dir"
        for f in filenames:
            p = Path(dirpath) / f
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            else:
                st = p.stat()
                out[rel] = (st.st_size, oct(st.st_mode), p.read_bytes())
    return out


def test_mount_behaves_like_a_plain_directory(module_mount, tmp_path):
    counter = itertools.count()
    plain_root = tmp_path / "plain"
    plain_root.mkdir()

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(ops=ops)
    def check(ops):
        n = next(counter)
        a, b = module_mount.mnt / f"ex{n}", plain_root / f"ex{n}"
        a.mkdir()
        b.mkdir()
        for op in ops:
            assert _apply(a, op) == _apply(b, op), op
        assert _tree(a) == _tree(b)

    check()
    module_mount.remount()
    assert _tree(module_mount.mnt) == _tree(plain_root)
    for entry in module_mount.mnt.iterdir():
        shutil.rmtree(entry)
    assert list(module_mount.mnt.iterdir()) == []
