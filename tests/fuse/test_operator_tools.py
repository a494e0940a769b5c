"""The operator's tools (issue 22) through real mounts and the real command line: online verify
and scrub, retention (prune) on a mount and on a bucket, a report of one snapshot with its
created time, the systemd unit's command under a stand-in systemd (sd_notify, the journal),
and the bash completion. Metrics scraped during a real CRIU dump: tests/criu/test_metrics.py."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lzfs.mount.mountinfo import find_mount
from lzfs.store.layout import mkfs
from tests.conftest import Mounted, fuse_unusable_reason, lzfs_cmd

pytestmark = pytest.mark.skipif(fuse_unusable_reason() is not None,
                                reason=fuse_unusable_reason() or "")

ROOT = Path(__file__).resolve().parents[2]
INVENTORY = b"\x19\x43\x56\x54\x16\x31\x31\x58" + bytes(4)  # magics and one empty entry
DAY = 86400


def snapshot(d: Path, data: bytes, when: float | None = None, complete: bool = True) -> None:
    """A snapshot directory as CRIU leaves it, as far as lzfs tells: pages, then inventory.img
    last (without it, a dump that did not finish); ``when``: its files' modification time."""
    d.mkdir()
    (d / "pages-1.img").write_bytes(data)
    if complete:
        (d / "inventory.img").write_bytes(INVENTORY)
    if when is not None:
        for f in [*d.iterdir(), d]:
            os.utime(f, (when, when))


def _pack_with_most_bytes(store: Path) -> Path:
    return max((store / "packs").iterdir(), key=lambda p: p.stat().st_size)


# ---- verify and scrub ---------------------------------------------------------------------

def test_verify_checks_a_mounted_snapshot_and_names_damage(mounted):
    snapshot(mounted.mnt / "a", os.urandom(6 << 20))
    snapshot(mounted.mnt / "b", os.urandom(2 << 20))
    mounted.settle()
    res = lzfs_cmd("verify", str(mounted.mnt / "a"))
    assert re.search(r"^a: sound: 2 files, \d+ frames", res.stdout, re.M), res.stdout
    whole = json.loads(lzfs_cmd("verify", "--json", str(mounted.mnt)).stdout)
    assert whole["clean"] and {s["snapshot"] for s in whole["snapshots"]} == {"a", "b"}
    assert sum(s["frame_bytes"] for s in whole["snapshots"]) > 7 << 20  # random: incompressible

    pack = _pack_with_most_bytes(mounted.store)
    with open(pack, "r+b") as f:  # rot in the middle of a committed pack
        f.seek(pack.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    res = lzfs_cmd("verify", str(mounted.mnt), check=False)
    assert res.returncode == 4, res.stdout + res.stderr
    assert "DAMAGED" in res.stdout and re.search(r"lzfs: [ab]/pages-1.img: damaged at \d+\+",
                                                  res.stderr), res.stderr
    out = json.loads(lzfs_cmd("verify", "--json", str(mounted.mnt), check=False).stdout)
    assert not out["clean"]
    damaged = [p for s in out["snapshots"] for p in s["damaged"]]
    assert damaged in (["a/pages-1.img"], ["b/pages-1.img"])  # one file of one snapshot
    assert (mounted.mnt / "a" / "inventory.img").read_bytes() == INVENTORY  # still serving


def test_verify_is_paced_by_its_rate(mounted):
    snapshot(mounted.mnt / "a", os.urandom(4 << 20))
    mounted.settle()
    started = time.monotonic()
    lzfs_cmd("verify", "--rate", "2", str(mounted.mnt / "a"))
    assert time.monotonic() - started > 1.5  # 4 MiB at 2 MiB/s: a floor, whatever the load


def test_verify_refuses_what_is_not_a_snapshot(mounted, tmp_path):
    res = lzfs_cmd("verify", str(mounted.mnt / "nothing"), check=False)
    assert res.returncode == 1 and "no such snapshot directory" in res.stderr
    res = lzfs_cmd("verify", str(tmp_path), check=False)
    assert res.returncode == 1 and "neither in an lzfs mount nor in a store" in res.stderr


def test_a_mount_scrubs_by_itself_and_reports_what_it_found(tmp_path):
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    mkfs(store)
    mnt.mkdir()
    m = Mounted(store, mnt, ("-o", "scrub_hours=0.0005,nostage"))  # every 1.8 s
    m.mount()
    try:
        snapshot(mnt / "a", os.urandom(1 << 20))
        deadline = time.monotonic() + 30
        while True:
            st = json.loads((mnt / ".lzfs" / "stats.json").read_text())
            scrub = st.get("scrub")
            if scrub and scrub["frames"] > 0:
                break
            assert time.monotonic() < deadline, st
            time.sleep(0.3)
        assert scrub["damaged_files"] == 0 and scrub["snapshots"] == 1
        assert "scrub: 1 snapshot verified" in m.log()
    finally:
        m.umount()


# ---- prune ---------------------------------------------------------------------------------

def test_prune_on_a_mount_keeps_what_the_rules_say_and_gives_space_back(mounted):
    now = time.time()
    for i in range(5):  # one a day: job-0 is the oldest
        snapshot(mounted.mnt / f"job-{i}", os.urandom(1 << 20), now - (5 - i) * DAY)
    snapshot(mounted.mnt / "job-9", os.urandom(1 << 20), now - 10 * DAY, complete=False)
    snapshot(mounted.mnt / "other", os.urandom(1 << 20), now - 30 * DAY)
    mounted.settle()
    names = {p.name for p in mounted.mnt.iterdir()}

    dry = lzfs_cmd("prune", str(mounted.mnt), "--keep-last", "2", "--dry-run")
    assert {p.name for p in mounted.mnt.iterdir()} == names
    assert "would remove 4 snapshots, keep 3 (dry run: nothing removed)" in dry.stdout
    assert re.search(r"would remove\s+job-9 .*\(incomplete\)", dry.stdout)

    out = json.loads(lzfs_cmd("prune", str(mounted.mnt), "--keep-last", "2",
                              "--keep-within", "36h", "--json").stdout)
    kept = {d["name"] for d in out["decisions"] if d["keep"]}
    assert kept == {"job-4", "job-3", "other"}  # "other": the newest of its own series
    assert {p.name for p in mounted.mnt.iterdir()} == kept
    assert out["freed"] > 2 << 20  # three random MiB gone, less what a pack still holds
    rep = json.loads(lzfs_cmd("report", "--json", str(mounted.mnt)).stdout)
    assert {g["name"] for g in rep["groups"]} == kept


def test_prune_says_what_it_needs(mounted, tmp_path):
    res = lzfs_cmd("prune", str(mounted.mnt), check=False)
    assert res.returncode == 1 and "--keep-last N and/or --keep-within" in res.stderr
    res = lzfs_cmd("prune", str(mounted.mnt), "--keep-within", "7 days", check=False)
    assert res.returncode == 1 and "not an interval" in res.stderr
    res = lzfs_cmd("prune", str(tmp_path), "--keep-last", "1", check=False)
    assert res.returncode == 1 and "not an lzfs mount point" in res.stderr


def test_prune_on_a_bucket_leaves_tombstones(tmp_path):
    shared = tmp_path / "bucket"
    shared.mkdir()
    url = f"file://{shared}"
    lzfs_cmd("mkfs", url)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    opts = ("--cache", str(tmp_path / "cache"), "--refresh", "0")
    lzfs_cmd("mount", url, str(mnt), *opts)
    now = time.time()
    try:
        for i in range(3):
            snapshot(mnt / f"model-{i}", os.urandom(256 << 10), now - (3 - i) * DAY)
            lzfs_cmd("publish", str(mnt / f"model-{i}"))
    finally:
        lzfs_cmd("umount", str(mnt))
    out = lzfs_cmd("prune", url, "--keep-last", "1").stdout
    assert "removed 2 snapshots, kept 1" in out
    rep = json.loads(lzfs_cmd("report", "--json", url).stdout)
    assert [g["name"] for g in rep["groups"]] == ["model-2"]
    assert sorted(shared.glob("snapshots/model-0/*.rm"))  # a tombstone, as lzfs rm leaves


# ---- report of one snapshot ----------------------------------------------------------------

def test_report_of_one_snapshot_with_its_created_time(mounted):
    when = time.mktime((2026, 3, 1, 12, 30, 0, 0, 0, -1))
    snapshot(mounted.mnt / "a", os.urandom(1 << 20), when)
    snapshot(mounted.mnt / "b", os.urandom(1 << 20))
    one = json.loads(lzfs_cmd("report", "--json", str(mounted.mnt / "a")).stdout)
    assert [g["name"] for g in one["groups"]] == ["a"] and one["snapshot"] == "a"
    assert one["groups"][0]["created"] == pytest.approx(when)
    files = json.loads(lzfs_cmd("report", "--json", "--by", "file",
                                str(mounted.mnt / "a")).stdout)
    assert sorted(g["name"] for g in files["groups"]) == ["a/inventory.img", "a/pages-1.img"]
    text = lzfs_cmd("report", str(mounted.mnt / "a"), env={**os.environ, "COLUMNS": "200"})
    assert "2026-03-01 12:30" in text.stdout and "snapshot a" in text.stdout
    res = lzfs_cmd("report", str(mounted.mnt / "nope"), check=False)
    assert res.returncode == 1 and "no snapshot there" in res.stderr


# ---- the systemd unit ----------------------------------------------------------------------

def _unit_command(conf: dict[str, str]) -> list[str]:
    """ExecStart of mount/lzfs@.service with its environment file's variables put in, as
    systemd does for unquoted $VARS (split at whitespace)."""
    unit = (ROOT / "mount" / "lzfs@.service").read_text()
    line = next(x for x in unit.splitlines() if x.startswith("ExecStart="))
    argv = []
    for word in shlex.split(line.removeprefix("ExecStart=")):
        if word.startswith("$"):
            argv += conf[word[1:]].split()
        else:
            argv.append(word)
    return argv


def test_the_unit_runs_under_systemd_notify_and_logs_to_the_journal(tmp_path):
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    mkfs(store)
    mnt.mkdir()
    example = (ROOT / "mount" / "lzfs.conf.example").read_text()
    conf = dict(re.findall(r"^(LZFS_\w+)=(.*)$", example, re.M))
    assert set(conf) == {"LZFS_STORE", "LZFS_MOUNTPOINT", "LZFS_OPTIONS"}
    conf.update(LZFS_STORE=str(store), LZFS_MOUNTPOINT=str(mnt))
    argv = _unit_command(conf)
    assert argv[0] == "/usr/local/bin/lzfs" and "--foreground" in argv
    argv[0:1] = [sys.executable, "-m", "lzfs"]  # this checkout's lzfs, not an installed one
    argv = [re.sub(r"metrics=\d+,?", "", a) for a in argv]  # no fixed port in a test

    notify = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    sock.settimeout(30)
    r, w = os.pipe()
    st = os.fstat(w)  # the journal's stream, as systemd hands it over
    env = {**os.environ, "NOTIFY_SOCKET": str(notify),
           "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
    daemon = subprocess.Popen(argv, stderr=w, stdout=subprocess.DEVNULL, env=env)
    os.close(w)
    try:
        ready = sock.recv(4096).decode()
        assert ready.startswith("READY=1") and str(mnt) in ready
        assert find_mount(mnt) is not None  # ready means mounted
        (mnt / "f").write_bytes(b"x" * 10000)
        daemon.send_signal(signal.SIGHUP)  # systemctl reload: reopen logs, keep serving
        time.sleep(0.5)
        assert (mnt / "f").read_bytes() == b"x" * 10000
        daemon.send_signal(signal.SIGTERM)  # systemctl stop
        assert sock.recv(4096).decode() == "STOPPING=1"
        assert daemon.wait(60) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        subprocess.run(["fusermount3", "-uz", str(mnt)], capture_output=True, check=False)
        sock.close()
    with os.fdopen(r) as f:
        lines = f.read().splitlines()
    assert lines and all(re.match(r"<[0-7]>", x) for x in lines), lines
    assert any(x.startswith("<6>") and "mounted" in x for x in lines)
    assert not any(re.search(r"\d\d:\d\d:\d\d", x) for x in lines)  # the journal stamps them
    assert find_mount(mnt) is None


# ---- shell completion ----------------------------------------------------------------------

def _complete(script: Path, words: str) -> list[str]:
    """What bash completes for the command line ``words`` (the last word being typed)."""
    line = words
    probe = f"""
source {shlex.quote(str(script))}
COMP_LINE={shlex.quote(line)}
COMP_POINT=${{#COMP_LINE}}
read -ra COMP_WORDS <<< "$COMP_LINE"
[[ "$COMP_LINE" == *" " ]] && COMP_WORDS+=("")
COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
fn=$(complete -p lzfs | sed -E 's/.*-F ([^ ]+).*/\\1/')
$fn lzfs "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    res = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True)
    return res.stdout.split()


def test_bash_completion_comes_from_the_parser(tmp_path):
    script = tmp_path / "lzfs.bash"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "completion.py"), str(script)],
                   check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})  # this checkout
    subprocess.run(["bash", "-n", str(script)], check=True)
    assert set(_complete(script, "lzfs ")) >= {"mount", "umount", "verify", "prune", "report",
                                                "stats", "gc", "fsck", "export", "import"}
    assert "prune" in _complete(script, "lzfs pr")
    assert set(_complete(script, "lzfs prune --keep")) == {"--keep-last", "--keep-within"}
    assert "--metrics" in _complete(script, "lzfs mount --metr")
