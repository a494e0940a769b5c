"""Real containers to checkpoint: a runc bundle around one static process (memhold.c), and
the runc and Podman commands that checkpoint and restore it. Used by tests/containers and by
the bench's container profile.

The rootfs is one statically linked file built here with the host's C compiler, so it needs no
image, no network and no distribution inside: what the container holds is the process's
memory. The host talks to it through a bind-mounted control directory (its checksum on
SIGUSR1), since a container's stdio must be /dev/null for CRIU to restore it.

runc and Podman exec ``criu`` from PATH. The CRIU lzfs uses (LZFS_CRIU) is put first on PATH
for those commands only, through a directory that holds nothing but a ``criu``: a system CRIU
elsewhere is never replaced.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from lzfs.testing.criu import criu_command

SOURCE = Path(__file__).with_name("memhold.c")


def runtime_unusable_reason(runtime: str = "runc") -> str | None:
    """None when ``runtime`` can checkpoint containers here, else why not (for test skips)."""
    if shutil.which(runtime) is None:
        how = ("apt-get install --no-install-recommends runc" if runtime == "runc"
               else f"apt-get install {runtime}")
        return f"no {runtime} ({how}, or run scripts/setup)"
    if shutil.which("iptables-restore") is None:
        return ("no iptables-restore on PATH (apt-get install iptables): CRIU locks a "
                "container's network namespace with it")
    if shutil.which("cc") is None:
        return "no C compiler to build the container's static process (apt-get install gcc)"
    if not Path("/usr/lib/x86_64-linux-gnu/libc.a").exists() and not list(
            Path("/usr/lib").glob("*/libc.a")):
        return "no static libc for the container's process (apt-get install libc6-dev)"
    if criu_command() is None:
        return "no CRIU: set LZFS_CRIU or run scripts/setup"
    return None


def criu_path_env(work: Path) -> dict[str, str]:
    """The environment for runc/Podman: PATH led by a directory whose ``criu`` is LZFS_CRIU."""
    cmd = criu_command()
    if cmd is None:
        raise RuntimeError("no CRIU (set LZFS_CRIU)")
    bindir = work / "criu-bin"
    bindir.mkdir(parents=True, exist_ok=True)
    wrapper = bindir / "criu"
    if not wrapper.exists():
        wrapper.write_text("#!/bin/sh\nexec " + " ".join(f"'{c}'" for c in cmd) + ' "$@"\n')
        wrapper.chmod(0o755)
    return dict(os.environ, PATH=f"{bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}")


def build_memhold(dest: Path) -> Path:
    """memhold, compiled static into ``dest`` (cached under /var/tmp by source hash)."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    cached = Path(f"/var/tmp/lzfs-memhold-{digest}")
    if not cached.exists():
        tmp = cached.with_name(f"{cached.name}.{os.getpid()}")
        subprocess.run(["cc", "-static", "-O2", "-o", str(tmp), str(SOURCE)], check=True,
                       capture_output=True, text=True)
        os.replace(tmp, cached)
    shutil.copy2(cached, dest)
    return dest


def make_bundle(bundle: Path, ctl: Path, mib: int, seed: int = 1) -> Path:
    """A runc bundle: rootfs holding memhold, config.json from `runc spec` with no terminal,
    memhold as the process and ``ctl`` bind-mounted at /ctl."""
    rootfs = bundle / "rootfs"
    for d in ("proc", "dev", "sys", "ctl", "tmp"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    build_memhold(rootfs / "memhold")
    ctl.mkdir(parents=True, exist_ok=True)
    (bundle / "config.json").unlink(missing_ok=True)
    subprocess.run(["runc", "spec", "--bundle", str(bundle)], check=True, capture_output=True)
    config = json.loads((bundle / "config.json").read_text())
    config["process"]["terminal"] = False
    config["process"]["args"] = ["/memhold", str(mib), str(seed)]
    config["mounts"].append({"destination": "/ctl", "type": "bind", "source": str(ctl),
                             "options": ["rbind", "rw"]})
    (bundle / "config.json").write_text(json.dumps(config, indent=2))
    return bundle


def _run(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 300,
         log: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``cmd``; with ``log`` (a file the command writes its errors to), stdio is
    /dev/null: a detached container inherits it, and CRIU cannot restore host pipes."""
    quiet = subprocess.DEVNULL
    res = subprocess.run(cmd, check=False, stdin=quiet,
                         stdout=quiet if log else subprocess.PIPE,
                         stderr=quiet if log else subprocess.PIPE, text=True, env=env,
                         timeout=timeout)
    if res.returncode != 0:
        why = (log.read_text(errors="replace") if log and log.exists()
               else res.stderr or res.stdout or "")
        raise RuntimeError(f"{' '.join(cmd[:5])} ... failed ({res.returncode}): "
                           f"{why.strip()[-800:]}")
    return res


def _wait_file(path: Path, timeout: float, alive) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if not alive():
            raise RuntimeError(f"the container exited before writing {path.name}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the container wrote no {path.name} in {timeout:.0f} s")
        time.sleep(0.05)
    return path.read_text().strip()


@dataclass
class RuncContainer:
    """One runc container (state under ``work/state``, never the system's /run/runc)."""
    work: Path
    name: str
    mib: int = 48
    seed: int = 1
    checksum: str = ""
    wrap: tuple[str, ...] = ()  # a command prefix for runc (the bench's throttling cgroup)

    @property
    def bundle(self) -> Path:
        return self.work / "bundle"

    @property
    def ctl(self) -> Path:
        return self.work / "ctl"

    def runc(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        log = self.work / "runc.log"
        log.unlink(missing_ok=True)
        return _run([*self.wrap, "runc", "--root", str(self.work / "state"), "--log", str(log),
                     *args],
                    env=criu_path_env(self.work), timeout=timeout, log=log)

    def start(self, timeout: float = 120) -> str:
        """Run it detached; returns the checksum it reports once its memory is built."""
        make_bundle(self.bundle, self.ctl, self.mib, self.seed)
        (self.ctl / "ready").unlink(missing_ok=True)
        self.runc("run", "-d", "--bundle", str(self.bundle), self.name)
        self.checksum = _wait_file(self.ctl / "ready", timeout, self.running)
        return self.checksum

    def state(self) -> str | None:
        """runc's status of it ("running", "stopped"...), None once it is gone."""
        res = subprocess.run(["runc", "--root", str(self.work / "state"), "state", self.name],
                             check=False, capture_output=True, text=True)
        return json.loads(res.stdout)["status"] if res.returncode == 0 else None

    def running(self) -> bool:
        return self.state() == "running"

    def ask_checksum(self, timeout: float = 60) -> str:
        """The checksum it computes now (SIGUSR1, answer in ctl/result)."""
        (self.ctl / "result").unlink(missing_ok=True)
        self.runc("kill", self.name, "USR1")
        return _wait_file(self.ctl / "result", timeout, self.running).split()[1]

    def checkpoint(self, images: Path, *extra: str) -> float:
        """``runc checkpoint`` into ``images`` (the container stops); seconds it took."""
        images.mkdir(parents=True, exist_ok=True)
        work = self.work / "cp-work"
        work.mkdir(exist_ok=True)
        t = time.monotonic()
        self.runc("checkpoint", "--image-path", str(images), "--work-path", str(work), *extra,
                  self.name)
        return time.monotonic() - t

    def restore(self, images: Path, *extra: str) -> float:
        """``runc restore -d`` from ``images``; seconds until runc returned."""
        self.remove()  # a container stopped by a failed checkpoint would block the name
        work = self.work / "rs-work"
        work.mkdir(exist_ok=True)
        t = time.monotonic()
        self.runc("restore", "-d", "--image-path", str(images), "--work-path", str(work),
                  "--bundle", str(self.bundle), *extra, self.name)
        return time.monotonic() - t

    def remove(self) -> None:
        subprocess.run(["runc", "--root", str(self.work / "state"), "delete", "-f", self.name],
                       check=False, capture_output=True)


# Podman's defaults that fail in a sandbox or without a network: its default rlimits raise
# NOFILE and NPROC, which needs CAP_SYS_RESOURCE; only runc can checkpoint (Debian 12's crun
# 1.8.1 has no `checkpoint`); vfs storage makes no overlay mounts for a test to leave behind.
PODMAN_RUN_OPTIONS = ("--network", "none", "--ulimit", "nofile=1024:1024",
                      "--ulimit", "nproc=1024:1024")


@dataclass
class PodmanContainer:
    """One Podman container in a private storage root under ``work`` (never the system's)."""
    work: Path
    name: str
    mib: int = 48
    seed: int = 1
    checksum: str = ""
    runroot: Path = Path()  # Podman refuses a --runroot longer than 50 characters

    def __post_init__(self) -> None:
        self.runroot = Path(tempfile.mkdtemp(prefix="lzfs-podman-"))

    @property
    def ctl(self) -> Path:
        return self.work / "ctl"

    def _podman(self) -> list[str]:
        return ["podman", "--root", str(self.work / "storage"), "--runroot", str(self.runroot),
                "--storage-driver", "vfs", "--runtime", "runc", "--cgroup-manager", "cgroupfs",
                "--events-backend", "file"]

    def podman(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return _run([*self._podman(), *args], env=criu_path_env(self.work), timeout=timeout)

    def start(self, timeout: float = 120) -> str:
        """Import a one-file image, run it detached; returns its memory checksum."""
        rootfs = self.work / "rootfs"
        for d in ("proc", "dev", "sys", "ctl", "tmp"):
            (rootfs / d).mkdir(parents=True, exist_ok=True)
        build_memhold(rootfs / "memhold")
        tar = self.work / "rootfs.tar"
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tar), "."], check=True)
        self.podman("import", str(tar), "localhost/lzfs-memhold:test")
        self.ctl.mkdir(exist_ok=True)
        (self.ctl / "ready").unlink(missing_ok=True)
        self.podman("run", "-d", "--name", self.name, *PODMAN_RUN_OPTIONS, "-v",
                    f"{self.ctl}:/ctl", "localhost/lzfs-memhold:test", "/memhold",
                    str(self.mib), str(self.seed))
        self.checksum = _wait_file(self.ctl / "ready", timeout, self.running)
        return self.checksum

    def running(self) -> bool:
        res = subprocess.run([*self._podman(), "inspect", "--format", "{{.State.Running}}",
                              self.name], check=False, capture_output=True, text=True)
        return res.stdout.strip() == "true"

    def ask_checksum(self, timeout: float = 60) -> str:
        (self.ctl / "result").unlink(missing_ok=True)
        self.podman("kill", "--signal", "USR1", self.name)
        return _wait_file(self.ctl / "result", timeout, self.running).split()[1]

    def export(self, archive: Path, *extra: str) -> float:
        """``podman container checkpoint --export ARCHIVE --compress none``; seconds."""
        t = time.monotonic()
        self.podman("container", "checkpoint", "--export", str(archive), "--compress", "none",
                    *extra, self.name)
        return time.monotonic() - t

    def import_(self, archive: Path) -> float:
        """``podman container restore --import ARCHIVE`` (the container is removed first)."""
        self.podman("rm", "-f", self.name)
        t = time.monotonic()
        self.podman("container", "restore", "--import", str(archive))
        return time.monotonic() - t

    def remove(self) -> None:
        """Remove the container and the private storage (Podman's own cleanup of it)."""
        try:
            self.podman("rm", "-f", "--all", timeout=60)
            self.podman("system", "reset", "--force", timeout=60)
        except (RuntimeError, subprocess.TimeoutExpired):
            pass
        shutil.rmtree(self.runroot, ignore_errors=True)
