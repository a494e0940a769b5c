"""Telling `criu lazy-pages` apart by its command line (lzfs/criu/opener.py), on real processes."""

from __future__ import annotations

import subprocess
import sys

from lzfs.criu.opener import is_lazy_pages_daemon

SLEEPER = "import sys, time; sys.stdout.write('up\\n'); sys.stdout.flush(); time.sleep(30)"


def _with_args(*args: str) -> bool:
    proc = subprocess.Popen([sys.executable, "-c", SLEEPER, *args], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"up\n"
        return is_lazy_pages_daemon(proc.pid)
    finally:
        proc.kill()
        proc.wait()


def test_the_lazy_pages_action_is_recognised_anywhere_in_the_arguments():
    assert _with_args("lazy-pages", "-D", "/snap")
    assert _with_args("-D", "/snap", "lazy-pages")


def test_a_restore_with_lazy_pages_is_not_the_daemon():
    assert not _with_args("restore", "-D", "/snap", "--lazy-pages")
    assert not _with_args("-D", "/srv/lazy-pages-snapshots")


def test_a_process_that_is_gone_is_not_the_daemon():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert not is_lazy_pages_daemon(proc.pid)
