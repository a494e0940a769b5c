"""The `lzfs` command: parses arguments, calls into the package, prints. Nothing else.

The help texts are the user's manual: the man page is generated from this parser
(argparse-manpage, at setup), so what --help says and what `man lzfs` says cannot drift."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sqlite3
import sys
import textwrap
from dataclasses import asdict

from lzfs import __version__
from lzfs.errors import LzfsError
from lzfs.report.render import human, parse_size, stats_text

IMPORT_RECENT = 16  # lzfs.cluster.attach.IMPORT_RECENT, without importing the cluster here


def _remote(args: argparse.Namespace):
    """RemoteOptions from the object-store options, when the store argument is a URL."""
    from lzfs.cluster.attach import RemoteOptions
    from lzfs.objectstore.backend import is_remote

    spec = str(getattr(args, "store", None) or getattr(args, "path", ""))
    if not is_remote(spec):
        return None
    return RemoteOptions(endpoint=args.endpoint, profile=args.profile,
                         cache=getattr(args, "cache", None),
                         cache_size=parse_size(getattr(args, "cache_size", None) or "10G"),
                         refresh=getattr(args, "refresh", 10.0),
                         import_recent=getattr(args, "import_recent", IMPORT_RECENT))


def cmd_mkfs(args: argparse.Namespace) -> None:
    from lzfs.store import mkfs
    from lzfs.store.db import SCHEMA_VERSION

    if _remote(args) is not None:
        from lzfs.cluster.bucket import remote_mkfs
        from lzfs.objectstore.backend import open_backend

        backend = open_backend(args.store, args.endpoint, args.profile)
        if args.create_bucket and hasattr(backend, "create_bucket"):
            backend.create_bucket()
        rcfg = remote_mkfs(backend, args.avg_pages, args.max_pages, args.grace)
        print(f"created lzfs store {backend.url} (bucket format {rcfg.version}, pages "
              f"deduplicated one by one; gc grace {rcfg.gc_grace_s:.0f} s)")
        return

    cfg = mkfs(args.store, avg_pages=args.avg_pages, max_pages=args.max_pages)
    print(f"created lzfs store {args.store} (format {cfg.version}, metadata schema "
          f"{SCHEMA_VERSION}: 4 KiB pages deduplicated one by one, compressed in frames)")


def cmd_mount(args: argparse.Namespace) -> None:
    extra = []
    for o in (o for opt in args.o for o in opt.split(",")):
        if o.startswith("domain="):  # so that fstab lines can name it: -o domain=tenant-a
            args.domain = o.partition("=")[2]
        elif o == "nostage":
            args.no_stage = True
        elif o:
            extra.append(o)
    remote = _remote(args)
    if not args.foreground:
        tail = (["--allow-other"] if args.allow_other else []) + \
               [f"--cache-mb={args.cache_mb}"] + [f"-o{o}" for o in extra]
        if args.domain:
            tail.append(f"--domain={args.domain}")
        tail += [f"--reserve-mb={args.reserve_mb}", f"--commit-interval={args.commit_interval}"]
        tail += ["--no-stage"] if args.no_stage else []
        tail += [] if args.stage_backlog is None else [f"--stage-backlog={args.stage_backlog}"]
        tail += [] if args.settle_idle is None else [f"--settle-idle={args.settle_idle}"]
        if args.debug:
            tail.append("--debug")
        log_dir = None
        if remote is not None:
            if not remote.cache:
                raise LzfsError(f"mounting {args.store} needs --cache DIR: a local directory "
                                f"for this node's working store and block cache")
            tail += [f"--cache={remote.cache}", f"--cache-size={remote.cache_size}",
                     f"--refresh={remote.refresh}", f"--import-recent={remote.import_recent}"]
            tail += [f"--endpoint={args.endpoint}"] if args.endpoint else []
            tail += [f"--profile={args.profile}"] if args.profile else []
            log_dir = remote.cache
        from lzfs.mount.spawn import spawn

        spawn(args.store, args.mountpoint, tail, args.log, log_dir=log_dir)
        return
    from lzfs.mount import daemon

    _setup_logging(args.log, args.debug)
    daemon.serve(args.store, args.mountpoint, allow_other=args.allow_other,
                 cache_mb=args.cache_mb, options=extra, ready_fd=args.ready_fd,
                 domain=args.domain, reserve_mb=args.reserve_mb,
                 commit_interval=args.commit_interval, remote=remote,
                 staging=not args.no_stage, stage_backlog=args.stage_backlog,
                 settle_idle=args.settle_idle)


def cmd_umount(args: argparse.Namespace) -> None:
    from lzfs.mount.mounts import umount

    m = umount(args.mountpoint, timeout=args.timeout, lazy=args.lazy)
    left = _unpublished(str(m.store))
    if left:  # a node whose object store failed: unmounted, the data safe in its cache
        names = ", ".join(left)
        why = next(iter(left.values()))
        raise LzfsError(f"unmounted {m.mountpoint}, but {len(left)} snapshot"
                        f"{'s are' if len(left) > 1 else ' is'} not published: {names} "
                        f"({why}); kept in {m.store}: mount it again and 'lzfs publish "
                        f"MNT/NAME' (or unmount again) once the object store is back")


def _unpublished(cache: str) -> dict[str, str]:
    """What a node's last unmount could not publish (lzfs/cluster/exchange.py)."""
    from pathlib import Path

    try:
        return dict(json.loads((Path(cache) / "unpublished.json").read_text()))
    except (OSError, ValueError):
        return {}


def _awaiting(path: str) -> dict[str, str] | None:
    """Snapshots of a node cache (or its mount) that wait to be published; None: no node."""
    from lzfs.cluster.attach import attach_readonly

    store = _open_readonly(path)
    try:
        node = attach_readonly(store)
        if node is None:
            return None
        try:
            return node.exchange.awaiting()
        finally:
            node.close()
    finally:
        store.close()


def _print_awaiting(path: str) -> None:
    try:
        left = _awaiting(path)
    except LzfsError:
        return
    if left:
        print(f"awaiting publication ({len(left)}): " + ", ".join(
            f"{n} ({why})" for n, why in left.items()))


def cmd_stats(args: argparse.Namespace) -> None:
    from lzfs.store import Store

    store = Store(args.store, readonly=True)
    try:
        st = store.stats()
    finally:
        store.close()
    if args.json:
        out = asdict(st)
        left = _awaiting(args.store)
        if left is not None:
            out["unpublished"] = left
        print(json.dumps(out, indent=2))
        return
    print(stats_text(asdict(st)), end="")
    _print_awaiting(args.store)


def _open_readonly(path: str):
    """A store opened beside a running daemon. Given a mount point, first ask the daemon to
    settle what dumps staged (setxattr user.lzfs.settle on .lzfs: compressed and
    deduplicated, as it would be a second later when idle) and to commit (fsync on the
    mount's root directory), so figures are current and final."""
    import os

    from lzfs.mount.mountinfo import find_mount
    from lzfs.store import Store

    m = find_mount(path)
    if m is not None:
        os.setxattr(m.mountpoint / ".lzfs", "user.lzfs.settle", b"1")
        fd = os.open(m.mountpoint, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return Store(m.store, readonly=True)
    return Store(path, readonly=True)


def cmd_report(args: argparse.Namespace) -> None:
    from lzfs.report import dedup as report
    from lzfs.report import render

    fn = {"snapshot": report.snapshot_report, "file": report.file_report,
          "region": report.region_report}[args.by]
    remote = _remote(args)
    if remote is not None:  # every published snapshot, from the manifests alone
        from lzfs.cluster.attach import snapshot_view

        with snapshot_view(args.path, remote) as store:
            data = fn(store)
    else:
        from lzfs.cluster.attach import attach_readonly

        store = _open_readonly(args.path)
        node = attach_readonly(store)  # a node cache: remote packs are read remotely
        try:
            data = fn(store)
        finally:
            store.close()
            if node is not None:
                node.close()
    if args.json:
        if remote is None:
            left = _awaiting(args.path)
            if left is not None:
                data["unpublished"] = left
        print(json.dumps(data, indent=2))
    else:
        render.print_report(data)
        if remote is None:
            _print_awaiting(args.path)


def cmd_publish(args: argparse.Namespace) -> None:
    from lzfs.cli.transfer import inside_mount

    path = os.path.abspath(args.snapshot)
    if not os.path.isdir(path) or not inside_mount(__import__("pathlib").Path(path)):
        raise LzfsError(f"{args.snapshot} is not a snapshot directory inside an lzfs mount")
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)  # the daemon publishes on fsyncdir of a top-level directory
    except OSError as exc:
        try:
            why = os.getxattr(path, "user.lzfs.error").decode()
        except OSError:
            why = exc.strerror or str(exc)
        raise LzfsError(f"publishing {args.snapshot} failed: {why}") from None
    finally:
        os.close(fd)
    try:
        key = os.getxattr(path, "user.lzfs.manifest").decode()
    except OSError:
        raise LzfsError(f"{args.snapshot} is not on an object-store mount (nothing to "
                        f"publish to)") from None
    print(f"published {args.snapshot} as {key}")


def cmd_import(args: argparse.Namespace) -> None:
    from pathlib import Path

    from lzfs.cli.transfer import copy_tree, inside_mount

    dst = Path(args.dest)
    if not inside_mount(dst.parent):
        raise LzfsError(f"{dst} is not inside an lzfs mount")
    files, total = copy_tree(Path(args.source), dst, show_progress=not args.quiet)
    print(f"imported {files} files, {human(total)}, into {dst} (verified)")


def cmd_export(args: argparse.Namespace) -> None:
    from pathlib import Path

    from lzfs.cli.transfer import copy_tree, inside_mount

    src = Path(args.source)
    if not inside_mount(src):
        raise LzfsError(f"{src} is not inside an lzfs mount")
    files, total = copy_tree(src, Path(args.dest), show_progress=not args.quiet)
    print(f"exported {files} files, {human(total)}, to {args.dest} (verified)")


def _pack_bytes(path: str) -> int:
    store = _open_readonly(path)
    try:
        return store.stats().pack_bytes
    finally:
        store.close()


def cmd_gc(args: argparse.Namespace) -> None:
    from lzfs.mount.mountinfo import find_mount
    from lzfs.store import Store

    if _remote(args) is not None:
        from lzfs.cluster import gc
        from lzfs.objectstore.backend import open_backend

        res = gc.collect(open_backend(args.store, args.endpoint, args.profile), args.grace)
        print(f"{res.manifests} manifests name {res.packs - res.deleted - res.young} of "
              f"{res.packs} pack objects; deleted {res.deleted} ({human(res.deleted_bytes)}), "
              f"kept {res.young} unreferenced within the grace period"
              + (f"; removed {res.retired} manifests and tombstones of deleted snapshots"
                 if res.retired else "")
              + ("; stopped after a quarter of the grace period: run it again"
                 if res.stopped else ""))
        return

    m = find_mount(args.store)
    if m is not None:  # the daemon owns the store: ask it (setxattr on .lzfs runs its gc)
        before = _pack_bytes(args.store)
        os.setxattr(m.mountpoint / ".lzfs", "user.lzfs.gc", b"1")
        print(f"gave back {human(max(before - _pack_bytes(args.store), 0))}")
        return
    store = Store(args.store)
    try:
        removed, freed = store.gc()
    finally:
        store.close()
    print(f"removed {removed} unreferenced frames, gave back {human(freed)}")


def cmd_rm(args: argparse.Namespace) -> None:
    from lzfs.cluster.remove import remove
    from lzfs.objectstore.backend import is_remote, open_backend

    if not is_remote(args.store):
        raise LzfsError(f"{args.store} is not an object store URL: on a mount, rm -r "
                        f"MNT/NAME removes a snapshot")
    backend = open_backend(args.store, args.endpoint, args.profile)
    for name in args.names:
        key, n = remove(backend, os.fsencode(name))
        print(f"deleted {name} ({n} manifest{'s' if n != 1 else ''}, tombstone {key}); its "
              f"packs go with the first gc after the grace period")


FSCK_FAILED = 8  # fsck(8)'s "operational error": it could not check


def cmd_fsck(args: argparse.Namespace) -> int:
    from lzfs.mount.mountinfo import find_mount
    from lzfs.report import render
    from lzfs.report.fsck import fsck

    if find_mount(args.store) is not None:
        _fail(f"{args.store} is a mount point: fsck wants the unmounted store "
              f"('lzfs umount {args.store}' first)")
        return FSCK_FAILED
    try:
        with render.byte_progress("verifying frames", quiet=args.quiet or args.json) as progress:
            result = fsck(args.store, repair=args.repair, progress=progress)
    except (LzfsError, OSError, sqlite3.Error) as exc:
        # fsck could not do its job: not "clean", not "repaired" (fsck(8) says 8)
        text = str(exc).replace("; run 'lzfs fsck' on the store", "")
        if isinstance(exc, sqlite3.Error) or "metadata database is damaged" in text:
            text += " (the SQLite file itself is damaged: fsck cannot mend it)"
        _fail(text)
        return FSCK_FAILED
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        render.print_fsck(result)
    if result.clean:
        return 0
    return 4 if not args.repair or result.remaining else 1


DESCRIPTION = """\
lzfs keeps CRIU checkpoints compressed and deduplicated behind an ordinary directory. Mount a
store, point `criu dump -D` and `criu restore -D` at a directory inside the mount, and look at
the snapshots with ls, du and cat: CRIU sees plain, uncompressed images, while lzfs stores each
distinct block of pages once, LZ4-compressed, and all-zero pages not at all.

A store is a local directory, or a bucket prefix in an S3-compatible object store
(s3://BUCKET/PREFIX) that several nodes mount, each through a local cache directory."""

EXAMPLES = """\
  lzfs mkfs /var/lib/lzfs/store
  lzfs mount /var/lib/lzfs/store /mnt/ckpt
  mkdir /mnt/ckpt/server-1
  criu dump -t $PID -D /mnt/ckpt/server-1 --shell-job
  criu restore -D /mnt/ckpt/server-1 --shell-job -d
  lzfs report /mnt/ckpt            what each snapshot costs and shares
  lzfs umount /mnt/ckpt            returns once everything is on disk
  lzfs fsck /var/lib/lzfs/store    verify every block of the unmounted store"""

EXIT_STATUS = """\
0 on success, 1 on an error (said in one line on stderr), 2 on a usage error, 130 when
interrupted. lzfs fsck has its own: 0 clean, 1 errors found and all repaired, 4 errors left,
8 fsck could not run."""

EPILOG = f"""\
examples:
{EXAMPLES}

Run 'lzfs COMMAND --help' for what a command does and its options; 'man lzfs' for all of it.

exit status:
{textwrap.indent(EXIT_STATUS, "  ")}"""

_RAW = argparse.RawDescriptionHelpFormatter


def _command(sub, name: str, help: str, description: str, examples: str):
    """A subcommand whose --help shows ``description`` and ``examples`` as written."""
    return sub.add_parser(name, help=help, description=description,
                          epilog="examples:\n" + examples, formatter_class=_RAW)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lzfs", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=_RAW)
    p.add_argument("--version", action="version", version=f"lzfs {__version__}",
                   help="print the version and exit")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND",
                           title="commands")

    s = _command(sub, "mkfs", "create an empty store (a directory, or s3://BUCKET/PREFIX)", """\
Create an empty lzfs store: a new (or empty) directory, or a prefix in an object-store
bucket. The block sizes chosen here are fixed for the store's life.""", """\
  lzfs mkfs /var/lib/lzfs/store
  lzfs mkfs s3://ckpt/models --endpoint http://s3.internal:8333 --create-bucket""")
    s.add_argument("store", help="the directory to create, or s3://BUCKET/PREFIX")
    _remote_args(s)
    s.add_argument("--create-bucket", action="store_true",
                   help="object store: create the bucket if it does not exist")
    s.add_argument("--grace", type=float, default=24 * 3600.0, metavar="SECONDS",
                   help="object store: how long gc keeps a pack no manifest names, so that "
                        "nodes still writing are safe (default 86400)")
    # the content-defined blocks of schema 1 and 2; kept so that old scripts still run, they
    # only fill lzfs.json (pages have been the unit of dedup since schema 3)
    s.add_argument("--avg-pages", type=int, default=16, help=argparse.SUPPRESS)
    s.add_argument("--max-pages", type=int, default=64, help=argparse.SUPPRESS)
    s.set_defaults(func=cmd_mkfs)

    s = _command(sub, "mount", "mount a store (returns once mounted; -f stays)", """\
Mount a store. Without -f the daemon starts in the background and the command returns once
the mount is live (or prints why it is not); the daemon logs to STORE/lzfs.log. It commits
every --commit-interval seconds, on fsync and on unmount. mount(8) works too, through the
helper scripts/setup installs: mount -t fuse.lzfs STORE MNT, or an fstab line.""", """\
  lzfs mount /var/lib/lzfs/store /mnt/ckpt
  lzfs mount --domain tenant-a /var/lib/lzfs/store /mnt/tenant-a
  lzfs mount -f --debug /var/lib/lzfs/store /mnt/ckpt     in the foreground, logging to stderr
  lzfs mount s3://ckpt/models /mnt/ckpt --endpoint http://s3.internal:8333 \\
      --cache /var/cache/lzfs --cache-size 50G
  fstab: /var/lib/lzfs/store  /mnt/ckpt  fuse.lzfs  defaults,_netdev  0 0""")
    s.add_argument("store", help="a store directory, or s3://BUCKET/PREFIX with --cache")
    s.add_argument("mountpoint", help="an existing directory that nothing is mounted on")
    _remote_args(s)
    s.add_argument("--cache", metavar="DIR",
                   help="object store: this node's cache directory (its working store)")
    s.add_argument("--cache-size", default="10G", metavar="SIZE",
                   help="object store: bytes of remote packs kept on local disk, with a K, M, "
                        "G or T suffix (default 10G)")
    s.add_argument("--refresh", type=float, default=10.0, metavar="SECONDS",
                   help="object store: seconds between looks for newly published snapshots "
                        "(default 10)")
    s.add_argument("--import-recent", type=int, default=IMPORT_RECENT, metavar="N",
                   help="object store: snapshots imported at mount, most recently published "
                        "first, so that new dumps deduplicate against them; the others are "
                        f"imported when first looked into (default {IMPORT_RECENT})")
    s.add_argument("-f", "--foreground", action="store_true",
                   help="serve in this process until unmounted; log to stderr unless --log")
    s.add_argument("-o", action="append", default=[], metavar="OPTS",
                   help="extra FUSE mount options, comma separated; -o domain=NAME is --domain")
    s.add_argument("--allow-other", action="store_true",
                   help="let users other than the mounter in (kernel permission checks apply)")
    s.add_argument("--cache-mb", type=int, default=128, metavar="MIB",
                   help="decoded-frame cache size in MiB (default 128)")
    s.add_argument("--domain", default="", metavar="NAME",
                   help="dedup domain (also -o domain=NAME): data written through this mount "
                        "dedups only with data written in the same domain (docs/reliability.md)")
    s.add_argument("--reserve-mb", type=int, default=64, metavar="MIB",
                   help="free space kept on the store's file system for metadata: writes get "
                        "ENOSPC below it (default 64)")
    s.add_argument("--commit-interval", type=float, default=5.0, metavar="SECONDS",
                   help="commit at least this often while anything changed: the most work a "
                        "daemon crash can lose (fsync and umount always commit; default 5)")
    s.add_argument("--no-stage", action="store_true",
                   help="never stage (also -o nostage): compress and deduplicate every write as "
                        "it comes, even when a dump outruns the encoder (slower dumps; "
                        "docs/format.md, staged frames)")
    # for tests: stage every write (0), settle only when asked (a long idle time)
    s.add_argument("--stage-backlog", type=int, default=None, help=argparse.SUPPRESS)
    s.add_argument("--settle-idle", type=float, default=None, help=argparse.SUPPRESS)
    s.add_argument("--log", metavar="FILE",
                   help="log file (default: STORE/lzfs.log in the background, stderr with -f)")
    s.add_argument("--debug", action="store_true",
                   help="log debug messages too (pyfuse3's, and boto3's for an object store): "
                        "for diagnosing, the log grows fast")
    s.add_argument("--ready-fd", type=int, default=-1, help=argparse.SUPPRESS)
    s.set_defaults(func=cmd_mount)

    s = _command(sub, "umount", "unmount; returns once everything is on disk", """\
Unmount an lzfs mount and wait until its daemon has stored and committed every byte and
exited: when this returns, the store can be copied, checked or mounted elsewhere. A mount with
a file still open is busy and is left mounted (unless -z). A node of an object store publishes
its changed snapshots first; one it cannot publish stays in its cache, and umount names it in
one line and exits 1.""", """\
  lzfs umount /mnt/ckpt
  lzfs umount -z /mnt/ckpt     detach at once; returns when the last open file is closed""")
    s.add_argument("mountpoint", help="where the store is mounted")
    s.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS",
                   help="how long to wait for the daemon to commit and exit after the "
                        "unmount (default 600)")
    s.add_argument("-z", "--lazy", action="store_true",
                   help="detach the mount now even if files are open (as umount -l), then wait "
                        "(up to --timeout) until the last one is closed and the daemon has "
                        "committed and exited")
    s.set_defaults(func=cmd_umount)

    s = _command(sub, "stats", "store-wide sizes: logical, after dedup, after compression", """\
Print the store's figures: logical size, zero pages, what dedup and then compression leave,
and the unreferenced blocks gc would remove. Reads the store beside a running daemon (the
figures are as of its last commit). For a node's cache of an object store, also the
snapshots that wait to be published.""", """\
  lzfs stats /var/lib/lzfs/store
  lzfs stats --json /var/lib/lzfs/store | jq .stored""")
    s.add_argument("store", help="the store directory")
    s.add_argument("--json", action="store_true",
                   help="print the figures as one JSON object (bytes and counts)")
    s.set_defaults(func=cmd_stats)

    s = _command(sub, "report", "what each snapshot costs: logical, stored, unique, shared", """\
What each snapshot (top-level directory), file or memory region costs: logical and stored
bytes, the bytes unique to it (what deleting it frees) and those shared, and with whom.
Given a mount point, the daemon commits first, so the figures are current. Columns and the
JSON schema are in docs/report.md.""", """\
  lzfs report /mnt/ckpt
  lzfs report --by region /mnt/ckpt
  lzfs report --json /var/lib/lzfs/store > report.json
  lzfs report s3://ckpt/models --endpoint http://s3.internal:8333     every published one""")
    s.add_argument("path", metavar="STORE_OR_MOUNT",
                   help="a store directory, its mount point, or s3://BUCKET/PREFIX")
    _remote_args(s)
    s.add_argument("--by", choices=["snapshot", "file", "region"], default="snapshot",
                   help="one row per snapshot (default), per file, or per memory region the "
                        "pages came from ([heap], [anon], mapped files)")
    s.add_argument("--json", action="store_true", help="machine-readable (docs/report.md)")
    s.set_defaults(func=cmd_report)

    s = _command(sub, "import", "bring a plain CRIU images directory into a mount", """\
Copy a plain CRIU images directory into a new snapshot directory of a mount, then read the
copy back and compare it with the source.""", """\
  lzfs import /srv/plain-dump /mnt/ckpt/server-2""")
    s.add_argument("source", metavar="PLAIN_DIR", help="the images directory to copy")
    s.add_argument("dest", metavar="MNT/NAME",
                   help="the new directory inside an lzfs mount (must not exist)")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_import)

    s = _command(sub, "export", "write a plain copy any CRIU can restore from", """\
Copy a snapshot directory out of a mount into a plain directory that any CRIU restores from
without lzfs, then read the copy back and compare it.""", """\
  lzfs export /mnt/ckpt/server-1 /srv/plain-copy
  criu restore -D /srv/plain-copy --shell-job -d""")
    s.add_argument("source", metavar="MNT/NAME", help="the snapshot directory in an lzfs mount")
    s.add_argument("dest", metavar="PLAIN_DIR", help="the directory to write (must not exist)")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_export)

    s = _command(sub, "fsck", "verify every block and the metadata of an unmounted store", """\
Check an unmounted store: the SQLite file, pack files, every frame and block hash, reference
and link counts, the directory tree and which snapshots are complete. Names each damaged file
with its byte ranges. With --repair, mends what can be mended without losing intact data
(docs/reliability.md).

Exit status: 0 clean, 1 errors found and all repaired, 4 errors left (or found, without
--repair), 8 fsck could not run (not a store, mounted or busy, unreadable).""", """\
  lzfs umount /mnt/ckpt && lzfs fsck /var/lib/lzfs/store
  lzfs fsck --repair /var/lib/lzfs/store""")
    s.add_argument("store", help="the store directory (unmounted)")
    s.add_argument("--repair", action="store_true",
                   help="mend what can be mended without losing intact data (see docs/"
                        "reliability.md)")
    s.add_argument("--json", action="store_true",
                   help="print the result as JSON (no progress bar)")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_fsck)

    s = _command(sub, "gc", "give back the space of blocks no file uses", """\
Remove blocks no file uses any more and give their space back. The daemon also does this by
itself; this is for now. On a mount point it asks the daemon; on an unmounted store it works
on the store; on an object store it deletes pack objects no manifest names, once they are
older than the bucket's grace period (safe while other nodes work).""", """\
  lzfs gc /mnt/ckpt
  lzfs gc s3://ckpt/models --endpoint http://s3.internal:8333""")
    s.add_argument("store", metavar="STORE_OR_MOUNT",
                   help="a mount point, an unmounted store directory, or s3://BUCKET/PREFIX")
    _remote_args(s)
    s.add_argument("--grace", type=float, default=None, metavar="SECONDS",
                   help="object store: override the bucket's grace period")
    s.set_defaults(func=cmd_gc)

    s = _command(sub, "publish", "publish a snapshot directory to the object store now", """\
Upload a snapshot's packs and then its manifest, so other nodes see it. Unmounting publishes
too, and so does 'sync MNT/NAME'. Prints the manifest's key.""", """\
  lzfs publish /mnt/ckpt/server-1""")
    s.add_argument("snapshot", metavar="MNT/NAME",
                   help="a top-level directory of an object-store mount")
    s.set_defaults(func=cmd_publish)

    s = _command(sub, "rm", "delete published snapshots from an object store", """\
Delete published snapshots from an object store: a tombstone per name hides it from every
node at its next look (a node that imported it keeps it until its next mount), and the first
gc after the grace period (lzfs gc) deletes its manifests and the packs only they used.
Publishing the name again later makes it a new snapshot.""", """\
  lzfs rm s3://ckpt/models server-1 --endpoint http://s3.internal:8333""")
    s.add_argument("store", metavar="URL", help="s3://BUCKET/PREFIX (or file:///DIR)")
    s.add_argument("names", metavar="NAME", nargs="+", help="published snapshot names")
    _remote_args(s)
    s.set_defaults(func=cmd_rm)
    return p


def _remote_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("--endpoint", metavar="URL",
                   help="object store: S3 endpoint URL (or AWS_ENDPOINT_URL)")
    s.add_argument("--profile", metavar="NAME",
                   help="object store: AWS profile for credentials")


def _setup_logging(path: str | None, debug: bool) -> None:
    handler: logging.Handler = logging.FileHandler(path) if path else logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)


def _fail(msg: str) -> None:
    """One line on stderr, whatever the message holds (a file name may hold a newline)."""
    print("lzfs: " + msg.replace("\n", "\\n").replace("\r", "\\r"), file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status = args.func(args)
    except LzfsError as exc:
        _fail(str(exc))
        return 1
    except sqlite3.DatabaseError as exc:  # a damaged page met after the store opened
        _fail(f"metadata database is damaged: {exc}; run 'lzfs fsck' on the store")
        return 1
    except OSError as exc:
        _fail(f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc))
        return 1
    except KeyboardInterrupt:
        print("lzfs: interrupted", file=sys.stderr)
        return 130
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
