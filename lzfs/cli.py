"""The `lzfs` command: parses arguments, calls into the package, prints. Nothing else."""

from __future__ import annotations

import argparse
import json
import logging
import sqlite3
import sys
from dataclasses import asdict

from . import __version__
from .errors import LzfsError
from .render import human, parse_size, stats_text


def _remote(args: argparse.Namespace):
    """RemoteOptions from the object-store options, when the store argument is a URL."""
    from .cluster.attach import RemoteOptions
    from .cluster.backend import is_remote

    spec = getattr(args, "store", None) or getattr(args, "path", "")
    if not is_remote(spec):
        return None
    return RemoteOptions(endpoint=args.endpoint, profile=args.profile,
                         cache=getattr(args, "cache", None),
                         cache_size=parse_size(getattr(args, "cache_size", None) or "10G"),
                         refresh=getattr(args, "refresh", 10.0))


def cmd_mkfs(args: argparse.Namespace) -> None:
    from .store import mkfs

    if _remote(args) is not None:
        from .cluster.backend import open_backend
        from .cluster.bucket import remote_mkfs

        backend = open_backend(args.store, args.endpoint, args.profile)
        if args.create_bucket and hasattr(backend, "create_bucket"):
            backend.create_bucket()
        cfg = remote_mkfs(backend, args.avg_pages, args.max_pages, args.grace)
        print(f"created lzfs store {backend.url} (bucket format {cfg.version}, blocks of "
              f"{cfg.avg_pages} pages on average, at most {cfg.max_pages}; gc grace "
              f"{cfg.gc_grace_s:.0f} s)")
        return

    cfg = mkfs(args.store, avg_pages=args.avg_pages, max_pages=args.max_pages)
    print(f"created lzfs store {args.store} (format {cfg.version}, blocks of "
          f"{cfg.avg_pages} pages on average, at most {cfg.max_pages})")


def cmd_mount(args: argparse.Namespace) -> None:
    from . import daemon

    extra = []
    for o in (o for opt in args.o for o in opt.split(",")):
        if o.startswith("domain="):  # so that fstab lines can name it: -o domain=tenant-a
            args.domain = o.partition("=")[2]
        elif o:
            extra.append(o)
    remote = _remote(args)
    if not args.foreground:
        tail = (["--allow-other"] if args.allow_other else []) + \
               [f"--cache-mb={args.cache_mb}"] + [f"-o{o}" for o in extra]
        if args.domain:
            tail.append(f"--domain={args.domain}")
        tail += [f"--reserve-mb={args.reserve_mb}", f"--commit-interval={args.commit_interval}"]
        if args.debug:
            tail.append("--debug")
        log_dir = None
        if remote is not None:
            if not remote.cache:
                raise LzfsError(f"mounting {args.store} needs --cache DIR: a local directory "
                                f"for this node's working store and block cache")
            tail += [f"--cache={remote.cache}", f"--cache-size={remote.cache_size}",
                     f"--refresh={remote.refresh}"]
            tail += [f"--endpoint={args.endpoint}"] if args.endpoint else []
            tail += [f"--profile={args.profile}"] if args.profile else []
            log_dir = remote.cache
        daemon.spawn(args.store, args.mountpoint, tail, args.log, log_dir=log_dir)
        return
    _setup_logging(args.log, args.debug)
    daemon.serve(args.store, args.mountpoint, allow_other=args.allow_other,
                 cache_mb=args.cache_mb, options=extra, ready_fd=args.ready_fd,
                 domain=args.domain, reserve_mb=args.reserve_mb,
                 commit_interval=args.commit_interval, remote=remote)


def cmd_umount(args: argparse.Namespace) -> None:
    from .mounts import umount

    umount(args.mountpoint, timeout=args.timeout, lazy=args.lazy)


def cmd_stats(args: argparse.Namespace) -> None:
    from .store import Store

    store = Store(args.store, readonly=True)
    try:
        st = store.stats()
    finally:
        store.close()
    if args.json:
        print(json.dumps(asdict(st), indent=2))
        return
    print(stats_text(asdict(st)), end="")


def _open_readonly(path: str):
    """A store opened beside a running daemon. Given a mount point, first ask the daemon to
    commit (fsync on the mount's root directory does that), so figures are current."""
    import os

    from .mounts import find_mount
    from .store import Store

    m = find_mount(path)
    if m is not None:
        fd = os.open(m.mountpoint, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return Store(m.store, readonly=True)
    return Store(path, readonly=True)


def cmd_report(args: argparse.Namespace) -> None:
    from . import render, report

    fn = {"snapshot": report.snapshot_report, "file": report.file_report,
          "region": report.region_report}[args.by]
    remote = _remote(args)
    if remote is not None:  # every published snapshot, from the manifests alone
        from .cluster.attach import snapshot_view

        with snapshot_view(args.path, remote) as store:
            data = fn(store)
    else:
        from .cluster.attach import attach_readonly

        store = _open_readonly(args.path)
        node = attach_readonly(store)  # a node cache: remote packs are read remotely
        try:
            data = fn(store)
        finally:
            store.close()
            if node is not None:
                node.close()
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        render.print_report(data)


def cmd_publish(args: argparse.Namespace) -> None:
    import os

    from .transfer import inside_mount

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
            why = exc.strerror
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

    from .transfer import copy_tree, inside_mount

    dst = Path(args.dest)
    if not inside_mount(dst.parent):
        raise LzfsError(f"{dst} is not inside an lzfs mount")
    files, total = copy_tree(Path(args.source), dst, show_progress=not args.quiet)
    print(f"imported {files} files, {human(total)}, into {dst} (verified)")


def cmd_export(args: argparse.Namespace) -> None:
    from pathlib import Path

    from .transfer import copy_tree, inside_mount

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
    import os

    from .mounts import find_mount
    from .store import Store

    if _remote(args) is not None:
        from .cluster import gc
        from .cluster.backend import open_backend

        res = gc.collect(open_backend(args.store, args.endpoint, args.profile), args.grace)
        print(f"{res.manifests} manifests name {res.packs - res.deleted - res.young} of "
              f"{res.packs} pack objects; deleted {res.deleted} ({human(res.deleted_bytes)}), "
              f"kept {res.young} unreferenced within the grace period")
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
    print(f"removed {removed} unreferenced blocks, gave back {human(freed)}")


FSCK_FAILED = 8  # fsck(8)'s "operational error": it could not check


def cmd_fsck(args: argparse.Namespace) -> int:
    from . import render
    from .fsck import fsck
    from .mounts import find_mount

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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lzfs", description=__doc__)
    p.add_argument("--version", action="version", version=f"lzfs {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("mkfs", help="create an empty store (a directory, or s3://BUCKET/PREFIX)")
    s.add_argument("store")
    _remote_args(s)
    s.add_argument("--create-bucket", action="store_true",
                   help="create the bucket if it does not exist")
    s.add_argument("--grace", type=float, default=24 * 3600.0,
                   help="object store: seconds an unreferenced pack is kept (default 86400)")
    s.add_argument("--avg-pages", type=int, default=16,
                   help="average block size in 4 KiB pages (power of two; default 16)")
    s.add_argument("--max-pages", type=int, default=64,
                   help="largest block in pages (default 64 = 256 KiB)")
    s.set_defaults(func=cmd_mkfs)

    s = sub.add_parser("mount", help="mount a store (returns once mounted; -f stays)")
    s.add_argument("store", help="a store directory, or s3://BUCKET/PREFIX with --cache")
    s.add_argument("mountpoint")
    _remote_args(s)
    s.add_argument("--cache", metavar="DIR",
                   help="object store: this node's cache directory (its working store)")
    s.add_argument("--cache-size", default="10G",
                   help="object store: bytes of remote packs kept on local disk (default 10G)")
    s.add_argument("--refresh", type=float, default=10.0,
                   help="object store: seconds between looks for newly published snapshots")
    s.add_argument("-f", "--foreground", action="store_true")
    s.add_argument("-o", action="append", default=[], metavar="OPTS",
                   help="extra FUSE mount options, comma separated")
    s.add_argument("--allow-other", action="store_true",
                   help="let users other than the mounter in (kernel permission checks apply)")
    s.add_argument("--cache-mb", type=int, default=128,
                   help="decoded-frame cache size in MiB (default 128)")
    s.add_argument("--domain", default="", metavar="NAME",
                   help="dedup domain (also -o domain=NAME): data written through this mount "
                        "dedups only with data written in the same domain (docs/reliability.md)")
    s.add_argument("--reserve-mb", type=int, default=64,
                   help="free space kept on the store's file system for metadata: writes get "
                        "ENOSPC below it (default 64)")
    s.add_argument("--commit-interval", type=float, default=5.0, metavar="SECONDS",
                   help="commit at least this often while anything changed: the most work a "
                        "daemon crash can lose (fsync and umount always commit; default 5)")
    s.add_argument("--log", help="log file (default: STORE/lzfs.log in the background, "
                                 "stderr with -f)")
    s.add_argument("--debug", action="store_true")
    s.add_argument("--ready-fd", type=int, default=-1, help=argparse.SUPPRESS)
    s.set_defaults(func=cmd_mount)

    s = sub.add_parser("umount", help="unmount; returns once everything is on disk")
    s.add_argument("mountpoint")
    s.add_argument("--timeout", type=float, default=600.0)
    s.add_argument("-z", "--lazy", action="store_true")
    s.set_defaults(func=cmd_umount)

    s = sub.add_parser("stats", help="store-wide sizes: logical, after dedup, after compression")
    s.add_argument("store")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_stats)

    s = sub.add_parser("report", help="what each snapshot costs: logical, stored, unique, shared")
    s.add_argument("path", metavar="STORE_OR_MOUNT")
    _remote_args(s)
    s.add_argument("--by", choices=["snapshot", "file", "region"], default="snapshot")
    s.add_argument("--json", action="store_true", help="machine-readable (docs/report.md)")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("import", help="bring a plain CRIU images directory into a mount")
    s.add_argument("source", metavar="PLAIN_DIR")
    s.add_argument("dest", metavar="MNT/NAME")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_import)

    s = sub.add_parser("export", help="write a plain copy any CRIU can restore from")
    s.add_argument("source", metavar="MNT/NAME")
    s.add_argument("dest", metavar="PLAIN_DIR")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("fsck", help="verify every block and the metadata of an unmounted store",
                       description="Exit status: 0 clean, 1 errors found and all repaired, "
                                   "4 errors left (or found, without --repair), 8 fsck could "
                                   "not run (not a store, busy, unreadable).")
    s.add_argument("store")
    s.add_argument("--repair", action="store_true",
                   help="mend what can be mended without losing intact data (see docs/"
                        "reliability.md)")
    s.add_argument("--json", action="store_true")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_fsck)

    s = sub.add_parser("gc", help="give back the space of blocks no file uses")
    s.add_argument("store", metavar="STORE_OR_MOUNT")
    _remote_args(s)
    s.add_argument("--grace", type=float, default=None,
                   help="object store: override the bucket's grace period (seconds)")
    s.set_defaults(func=cmd_gc)

    s = sub.add_parser("publish", help="publish a snapshot directory to the object store now")
    s.add_argument("snapshot", metavar="MNT/NAME")
    s.set_defaults(func=cmd_publish)
    return p


def _remote_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("--endpoint", help="object store: S3 endpoint URL (or AWS_ENDPOINT_URL)")
    s.add_argument("--profile", help="object store: AWS profile for credentials")


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
