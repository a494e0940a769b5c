"""lzfs import/export: verified, deduplicated, and never a half snapshot under the real name."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

from tests.conftest import lzfs_cmd


def _plain_snapshot(d, size: int, seed: int) -> None:
    import random

    d.mkdir()
    rnd = random.Random(seed)
    with open(d / "pages-1.img", "wb") as f:
        f.writelines(rnd.randbytes(1 << 20) for _ in range(size >> 20))
        f.write(bytes(size // 2))
    (d / "inventory.img").write_bytes(b"inv")
    (d / "dump.log").write_text("log\n")
    os.chmod(d / "dump.log", 0o600)
    os.symlink("../pre", d / "parent")


def _tree(d) -> dict:
    out = {}
    for p in sorted(d.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(d))] = (os.readlink(p) if p.is_symlink() else
                                      (oct(st.st_mode), p.read_bytes()))
    return out


def test_import_then_export_round_trips_and_dedups(mounted, tmp_path):
    plain = tmp_path / "plain"
    _plain_snapshot(plain, 8 << 20, 1)
    out = lzfs_cmd("import", "-q", str(plain), str(mounted.mnt / "s1")).stdout
    assert "verified" in out
    lzfs_cmd("gc", str(mounted.mnt))
    packs = mounted.store / "packs"
    one = sum(p.stat().st_blocks * 512 for p in packs.iterdir())
    lzfs_cmd("import", "-q", str(plain), str(mounted.mnt / "s2"))
    lzfs_cmd("gc", str(mounted.mnt))  # settles a staged copy: deduplicated after that
    two = sum(p.stat().st_blocks * 512 for p in packs.iterdir())
    assert two - one < 256 << 10  # the second copy is deduplicated
    assert _tree(mounted.mnt / "s2") == _tree(plain)
    back = tmp_path / "back"
    lzfs_cmd("export", "-q", str(mounted.mnt / "s1"), str(back))
    assert _tree(back) == _tree(plain)


def test_existing_names_and_wrong_places_are_refused(mounted, tmp_path):
    plain = tmp_path / "plain"
    _plain_snapshot(plain, 1 << 20, 2)
    lzfs_cmd("import", "-q", str(plain), str(mounted.mnt / "s"))
    res = lzfs_cmd("import", "-q", str(plain), str(mounted.mnt / "s"), check=False)
    assert res.returncode == 1 and "already exists" in res.stderr
    res = lzfs_cmd("import", "-q", str(plain), str(tmp_path / "nowhere"), check=False)
    assert res.returncode == 1 and "not inside an lzfs mount" in res.stderr
    res = lzfs_cmd("export", "-q", str(plain), str(tmp_path / "x"), check=False)
    assert res.returncode == 1
    assert "neither inside an lzfs mount nor STORE/NAME of a store" in res.stderr


def _interruptible() -> None:
    """Ctrl-C as at a terminal: a test run may ignore or block SIGINT (libraries do, in
    threads), and a child inherits both; then Python installs no KeyboardInterrupt handler, or
    the signal never arrives, and the import runs to its end."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_interrupted_import_leaves_nothing_behind(mounted, tmp_path):
    plain = tmp_path / "plain"
    _plain_snapshot(plain, 400 << 20, 3)
    for _ in range(3):  # an interrupt that came after the last byte interrupts nothing: again
        proc = subprocess.Popen([sys.executable, "-m", "lzfs", "import", "-q", str(plain),
                                 str(mounted.mnt / "big")], stderr=subprocess.PIPE, text=True,
                                preexec_fn=_interruptible)
        deadline = time.monotonic() + 60
        while not any(p.name.startswith(".big.partial") for p in mounted.mnt.iterdir()):
            assert time.monotonic() < deadline
            time.sleep(0.005)
        # stopped while it copies (600 MiB pass in well under a second through
        # passthrough), then interrupted: Ctrl-C lands mid-copy however fast the disk is
        proc.send_signal(signal.SIGSTOP)
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGCONT)
        proc.wait(timeout=60)
        if proc.returncode != 0:
            break
        shutil.rmtree(mounted.mnt / "big")  # it had finished before the signal: again
    assert proc.returncode != 0
    assert os.listdir(mounted.mnt) == []
