"""The `lzfs` command: the top-level parser and the exit statuses. Each command is a module
of this folder (register: its parser; run: parse, call into the package, print).

The help texts are the user's manual: the man page is generated from this parser
(argparse-manpage, at setup), so what --help says and what `man lzfs` says cannot drift."""

from __future__ import annotations

import argparse
import sqlite3
import sys
import textwrap

from lzfs import __version__
from lzfs.cli import fsck, gc, mkfs, mount, prune, publish, report, stats, transfer, verify
from lzfs.cli.common import RAW, fail
from lzfs.errors import LzfsError

DESCRIPTION = """\
lzfs keeps CRIU checkpoints compressed and deduplicated behind an ordinary directory. Mount a
store, point `criu dump -D` and `criu restore -D` at a directory inside the mount, and look at
the snapshots with ls, du and cat: CRIU sees plain, uncompressed images, while lzfs stores each
distinct 4 KiB page once, LZ4-compressed in frames, and all-zero pages not at all.

A store is a local directory, or a bucket prefix in an S3-compatible object store
(s3://BUCKET/PREFIX) that several nodes mount, each through a local cache directory."""

EXAMPLES = """\
  lzfs mkfs /var/lib/lzfs/store
  lzfs mount /var/lib/lzfs/store /mnt/ckpt
  mkdir /mnt/ckpt/server-1
  criu dump -t $PID -D /mnt/ckpt/server-1 --shell-job
  criu restore -D /mnt/ckpt/server-1 --shell-job -d
  lzfs report /mnt/ckpt            what each snapshot costs and shares
  lzfs verify /mnt/ckpt/server-1   every frame and page of a snapshot, while mounted
  lzfs prune /mnt/ckpt --keep-last 3 --keep-within 7d
  lzfs umount /mnt/ckpt            returns once everything is on disk
  lzfs fsck /var/lib/lzfs/store    verify every frame and page of the unmounted store"""

EXIT_STATUS = """\
0 on success, 1 on an error (said in one line on stderr), 2 on a usage error, 130 when
interrupted. lzfs fsck has its own: 0 clean, 1 errors found and all repaired, 4 errors left,
8 fsck could not run."""

SIGNALS = """\
The mount daemon (lzfs mount, or lzfs mount -f): SIGTERM and SIGINT unmount cleanly, as lzfs
umount does (every byte stored and committed first); SIGHUP reopens its log file (for
logrotate; systemctl reload); SIGUSR1 writes what each of its tasks waits on to the log.
Under systemd (Type=notify) it reports READY=1 once the mount is live and STOPPING=1, and logs
to the journal with each line's priority."""

ENVIRONMENT = """\
AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_PROFILE,
AWS_DEFAULT_REGION: an S3 object store's endpoint and credentials, read by boto3 as usual
(--endpoint and --profile take precedence).
NOTIFY_SOCKET, JOURNAL_STREAM: set by systemd; the daemon reports readiness there and logs
in the journal's format.
LZFS_CRIU: the CRIU command the tests, the demo and the benchmark run (scripts/setup writes the
one it found to .venv/lzfs.env)."""

FILES = """\
STORE/lzfs.json     the store's format and version
STORE/meta.db       SQLite: names, block maps, frames, the page index
STORE/packs/        append-only pack files of compressed frames
STORE/staging/      files a dump wrote through FUSE passthrough, not yet compressed
STORE/lzfs.log      the log of a daemon started in the background
STORE/lock          held by the daemon that has the store mounted; holds its pid
CACHE/node.json     a node of an object store: the bucket it caches and its id
MNT/.lzfs/          read-only figures of a mount: stats, stats.json, report, report.json
/sbin/mount.fuse.lzfs  the mount(8) helper (mount -t fuse.lzfs, fstab)
/etc/systemd/system/lzfs@.service  a mount as a service: lzfs@NAME mounts what
                    /etc/lzfs/NAME.conf names (see /etc/lzfs/lzfs.conf.example)
/usr/share/bash-completion/completions/lzfs  bash completion"""

EPILOG = f"""\
examples:
{EXAMPLES}

Run 'lzfs COMMAND --help' for what a command does and its options; 'man lzfs' for all of it.

exit status:
{textwrap.indent(EXIT_STATUS, "  ")}

signals:
{textwrap.indent(SIGNALS, "  ")}

environment:
{textwrap.indent(ENVIRONMENT, "  ")}

files:
{textwrap.indent(FILES, "  ")}"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lzfs", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=RAW)
    p.add_argument("--version", action="version", version=f"lzfs {__version__}",
                   help="print the version and exit")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND",
                           title="commands")
    for module in (mkfs, mount, stats, report, transfer, fsck, verify, gc, prune, publish):
        module.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status = args.func(args)
    except LzfsError as exc:
        fail(str(exc))
        return 1
    except sqlite3.DatabaseError as exc:  # a damaged page met after the store opened
        fail(f"metadata database is damaged: {exc}; run 'lzfs fsck' on the store")
        return 1
    except OSError as exc:
        fail(f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc))
        return 1
    except KeyboardInterrupt:
        print("lzfs: interrupted", file=sys.stderr)
        return 130
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
