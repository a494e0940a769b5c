"""Running real CRIU against a workload process, for tests, the demo and the benchmark.

CRIU is found through one setting: the environment variable LZFS_CRIU (a criu binary or a
wrapper script; scripts/setup writes the one it installed to .venv/lzfs.env), else `criu` on
PATH.
"""

from __future__ import annotations

import contextlib
import os
import select
import shlex
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


class CriuError(RuntimeError):
    """CRIU exited non-zero; the message carries the error lines of its log."""


def criu_command() -> list[str] | None:
    env = os.environ.get("LZFS_CRIU")
    if env:
        return shlex.split(env)
    found = shutil.which("criu")
    return [found] if found else None


def criu_unusable_reason() -> str | None:
    """None when CRIU can dump and restore here, else why not (for test skips)."""
    cmd = criu_command()
    if cmd is None:
        return "no CRIU: set LZFS_CRIU or run scripts/setup"
    if os.geteuid() != 0:
        return "CRIU needs root"
    try:
        res = subprocess.run([*cmd, "check"], capture_output=True, text=True, timeout=60,
                             check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{cmd[0]} does not run: {exc}"
    if res.returncode != 0:
        return f"'criu check' fails: {(res.stderr or res.stdout).strip()[-300:]}"
    return None


def run_criu(action: str, images: Path, *args: str, log_name: str | None = None,
             timeout: float = 600) -> subprocess.CompletedProcess:
    cmd = criu_command()
    if cmd is None:
        raise CriuError("no CRIU (set LZFS_CRIU)")
    log_name = log_name or f"{action}.log"
    full = [*cmd, action, "-D", str(images), "-v4", "-o", log_name, *args]
    res = subprocess.run(full, capture_output=True, text=True, timeout=timeout,
                         stdin=subprocess.DEVNULL, check=False)
    if res.returncode != 0:
        raise CriuError(f"criu {action} failed ({res.returncode}): "
                        f"{_log_tail(images / log_name) or res.stderr.strip()}")
    return res


class CriuServer:
    """A CRIU process that serves a restore or a dump from beside it: `criu lazy-pages` (pages
    on demand to a `restore --lazy-pages`) or `criu page-server` (pages of a `dump
    --page-server`, written into its images directory). It is ready once it says so through
    ``--status-fd`` and exits by itself once its partner is done; ``wait`` reports a failure
    with its log."""

    def __init__(self, action: str, images: Path, *args: str, prefix: list[str] | None = None,
                 verbose: bool = True, ready_timeout: float = 30) -> None:
        cmd = criu_command()
        if cmd is None:
            raise CriuError("no CRIU (set LZFS_CRIU)")
        self.action, self.images = action, images
        self.log = f"{action}.log"
        rfd, wfd = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [*(prefix or []), *cmd, action, "-D", str(images), *(["-v4"] * verbose),
                 "-o", self.log, "--status-fd", str(wfd), *args],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                text=True, pass_fds=(wfd,))
            os.close(wfd)
            wfd = -1
            ready, _, _ = select.select([rfd], [], [], ready_timeout)
            said = os.read(rfd, 1) if ready else b""
        finally:
            os.close(rfd)
            if wfd >= 0:
                os.close(wfd)
        if not said:  # exited (EOF) or silent
            if self.proc.poll() is None:
                self.kill()
                raise CriuError(f"criu {action} did not get ready in {ready_timeout:.0f} s")
            self.wait()

    def wait(self, timeout: float = 600) -> None:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise CriuError(f"criu {self.action} did not finish in {timeout:.0f} s") from None
        if rc != 0:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise CriuError(f"criu {self.action} failed ({rc}): "
                            f"{_log_tail(self.images / self.log) or err.strip()}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def start_lazy_pages(images: Path, prefix: list[str] | None = None, verbose: bool = True
                     ) -> CriuServer:
    """`criu lazy-pages -D images`. It creates ``lazy-pages.socket`` in the images directory
    (so the directory must take a socket node) for `criu restore --lazy-pages` to find."""
    return CriuServer("lazy-pages", images, prefix=prefix, verbose=verbose)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_page_server(images: Path, port: int, prefix: list[str] | None = None,
                      verbose: bool = True) -> CriuServer:
    """`criu page-server -D images --port N` on 127.0.0.1: takes one dump's pages, exits."""
    return CriuServer("page-server", images, "--address", "127.0.0.1", "--port", str(port),
                      prefix=prefix, verbose=verbose)


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    errors = [ln for ln in text if "Error" in ln or "error" in ln]
    return "\n".join((errors or text)[-lines:])


def become_subreaper() -> None:
    """Restored processes (criu restore -d) get reparented to us instead of to init, so we can
    reap them: a zombie would keep its pid, and the next restore of it fails with EEXIST."""
    import ctypes

    PR_SET_CHILD_SUBREAPER = 36
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


@dataclass
class Workload:
    """A running (or restored) workload process, talked to through files in ``ctl``."""
    ctl: Path
    pid: int
    checksum: str
    proc: subprocess.Popen | None = None
    children: list[int] = field(default_factory=list)  # forked workers (--children)

    @classmethod
    def start(cls, ctl: Path, size: str = "300M", profile: str = "llm", seed: int = 1,
              weights_seed: int = 1234, timeout: float = 300, children: int = 0) -> Workload:
        become_subreaper()
        ctl.mkdir(parents=True, exist_ok=True)
        for name in ("ready", "result", "trigger", "stop"):
            (ctl / name).unlink(missing_ok=True)
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
        proc = subprocess.Popen(
            [sys.executable, "-m", "lzfs.testing.workload", "--dir", str(ctl), "--size", size,
             "--profile", profile, "--seed", str(seed), "--weights-seed", str(weights_seed),
             "--children", str(children)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, cwd=ctl, env=env)
        deadline = time.monotonic() + timeout
        while not (ctl / "ready").exists():
            if proc.poll() is not None:
                raise RuntimeError(f"workload exited with {proc.returncode} before it was ready")
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("workload did not get ready in time")
            time.sleep(0.05)
        pid, checksum, *kids = (ctl / "ready").read_text().split()
        return cls(ctl, int(pid), checksum, proc, [int(k) for k in kids])

    def ask_checksum(self, timeout: float = 120, child: int | None = None,
                     fraction: float = 1.0) -> str:
        """The checksum the process (or its forked worker number ``child``) computes now, of
        all its memory or of the first ``fraction`` of it (lzfs.testing.workload)."""
        ctl = self.ctl if child is None else self.ctl / f"child{child}"
        pid = self.pid if child is None else self.children[child]
        (ctl / "result").unlink(missing_ok=True)
        tmp = ctl / "trigger.tmp"  # renamed into place: never seen half written
        tmp.write_text("" if fraction >= 1 else f"{fraction}")
        tmp.rename(ctl / "trigger")
        deadline = time.monotonic() + timeout
        while not (ctl / "result").exists():
            if not self.alive(pid):
                raise RuntimeError(f"workload {pid} is gone")
            if time.monotonic() > deadline:
                raise RuntimeError(f"workload {pid} did not answer")
            time.sleep(0.005)
        return (ctl / "result").read_text().strip()

    def mutate(self, fraction: float, seed: int = 0, timeout: float = 120) -> int:
        """Have the process change ``fraction`` of its pages (scattered, one byte each) and
        take its new checksum. Returns the number of pages changed."""
        (self.ctl / "mutated").unlink(missing_ok=True)
        (self.ctl / "mutate").write_text(f"{fraction} {seed}")
        deadline = time.monotonic() + timeout
        while not (self.ctl / "mutated").exists():
            if not self.alive():
                raise RuntimeError(f"workload {self.pid} is gone")
            if time.monotonic() > deadline:
                raise RuntimeError(f"workload {self.pid} did not mutate")
            time.sleep(0.05)
        n, self.checksum = (self.ctl / "mutated").read_text().split()
        return int(n)

    def alive(self, pid: int | None = None) -> bool:
        """Whether the process (default) or one of its workers is running."""
        pid = self.pid if pid is None else pid
        if pid == self.pid and self.proc is not None and self.proc.poll() is not None:
            return False
        try:  # restored by `criu restore -d`, it is our child (we are a subreaper): reap it
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return False
        except ChildProcessError:
            pass
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        try:  # a zombie counts as gone
            return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
        except OSError:
            return False

    def _is_ours(self, pid: int) -> bool:
        """Still this workload (its command line survives a CRIU restore), not a process that
        got the pid after ours exited."""
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return b"lzfs.testing.workload" in cmd and str(self.ctl).encode() in cmd

    def any_alive(self) -> bool:
        return any(self.alive(p) for p in (self.pid, *self.children))

    def wait_gone(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=timeout)
            self.proc = None  # after a dump its pid may come back as a restored process
        while self.any_alive() and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        (self.ctl / "stop").write_text("")
        self.wait_gone(10)
        for pid in (self.pid, *self.children):
            if self.alive(pid) and self._is_ours(pid):
                os.kill(pid, 9)
        self.wait_gone(10)
        (self.ctl / "stop").unlink(missing_ok=True)  # a later restore of it must run on
