"""Every setting of a mount, in one table: ``MountOptions``. The `lzfs mount` parser, the
``-o`` names that fstab lines and mount(8) use, the argv of the background daemon and the
daemon's own settings all come from its fields, and each default comes from the module that
owns it (core/policy.py, store/space.py, cluster/options.py). A new option is one field here.

Its place is the core's floor because Core takes it in its constructor; it imports nothing
heavy, since the `lzfs` command builds its parser from it for every command.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from lzfs.cluster.options import CACHE_SIZE, IMPORT_RECENT, REFRESH, RemoteOptions
from lzfs.core.policy import CACHE_MB, COMMIT_INTERVAL
from lzfs.errors import LzfsError
from lzfs.store.space import DEFAULT_RESERVE
from lzfs.units import human, parse_size

# FUSE and kernel mount options passed through to the mount as they are (libfuse accepts
# them at fuse_session_new); anything else that is not an lzfs option is refused by name
FUSE_FLAGS = frozenset({
    "ro", "rw", "suid", "nosuid", "dev", "nodev", "exec", "noexec", "sync", "async",
    "dirsync", "atime", "noatime", "diratime", "nodiratime", "relatime", "norelatime",
    "strictatime", "nostrictatime", "lazytime", "default_permissions", "allow_root",
    "auto_unmount"})
FUSE_VALUES = frozenset({"fsname", "subtype", "max_read", "blksize", "context", "fscontext",
                         "defcontext", "rootcontext"})
# what fstab and mount(8) add that means nothing to a mount of its own
FSTAB_ONLY = frozenset({"defaults", "auto", "noauto", "user", "nouser", "users", "_netdev",
                        "nofail", "owner", "group"})


def _opt(default: Any, help: str, *, metavar: str | None = None, remote: bool = False,
         flag: str | None = None, hidden: bool = False, kind: Any = None) -> Any:
    """A field of MountOptions with what the parser and -o need to know of it. ``flag``: the
    command-line flag when it is not --NAME (a boolean that is on by default is turned off
    with its own flag, --no-stage / -o nostage)."""
    return field(default=default, metadata={
        "help": help, "metavar": metavar, "remote": remote, "flag": flag, "hidden": hidden,
        "kind": kind})


@dataclass(frozen=True)
class MountOptions:
    cache_mb: int = _opt(CACHE_MB, f"decoded-frame cache size in MiB (default {CACHE_MB})",
                         metavar="MIB")
    domain: str = _opt("", "dedup domain: data written through this mount dedups only with "
                           "data written in the same domain (docs/reliability.md)",
                       metavar="NAME")
    reserve_mb: int = _opt(DEFAULT_RESERVE >> 20,
                           "free space kept on the store's file system for metadata: writes "
                           f"get ENOSPC below it (default {DEFAULT_RESERVE >> 20})",
                           metavar="MIB")
    commit_interval: float = _opt(
        COMMIT_INTERVAL, "commit at least this often while anything changed: the most work a "
        f"daemon crash can lose (fsync and umount always commit; default {COMMIT_INTERVAL:g})",
        metavar="SECONDS")
    stage: bool = _opt(True, "never stage: compress and deduplicate every write as it comes, "
                             "even when a dump outruns the encoder (slower dumps; "
                             "docs/format.md, staged frames)", flag="--no-stage")
    passthrough: bool = _opt(True, "never write a dump through FUSE passthrough: every byte "
                                   "goes through the daemon (docs/format.md, staging files)",
                             flag="--no-passthrough")
    fast_reads: bool = _opt(True, "answer every read in the daemon's request handler, never "
                                  "from the frame cache inside the FUSE callback (slower; "
                                  "for comparison, docs/format.md, the data path)",
                            flag="--no-fast-reads")
    allow_other: bool = _opt(False, "let users other than the mounter in (kernel permission "
                                    "checks apply)")
    nonempty: bool = _opt(False, "mount over a directory that holds files (they are hidden "
                                 "until the store is unmounted; refused otherwise)")
    scrub_hours: float = _opt(0.0, "verify every frame and page of every snapshot this often, "
                                   "in the background at the lowest priority (lzfs verify; "
                                   "damage is logged and counted in the metrics; default 0: "
                                   "never)", metavar="HOURS")
    metrics: str | None = _opt(None, "serve Prometheus metrics over HTTP at [ADDR:]PORT "
                                     "(a bare PORT is 127.0.0.1:PORT; docs/operations.md)",
                               metavar="[ADDR:]PORT")
    metrics_file: str | None = _opt(None, "write the Prometheus metrics to FILE every 15 s, "
                                          "for node_exporter's textfile collector",
                                    metavar="FILE")
    # for tests: stage every write (0), settle only when asked (a long idle time)
    stage_backlog: int | None = _opt(None, "", hidden=True, kind=int)
    settle_idle: float | None = _opt(None, "", hidden=True, kind=float)
    # an object store
    cache: str | None = _opt(None, "object store: this node's cache directory (its working "
                                   "store)", metavar="DIR", remote=True)
    cache_size: int = _opt(CACHE_SIZE, "object store: bytes of remote packs kept on local "
                                       "disk, with a K, M, G or T suffix (default "
                                       f"{human(CACHE_SIZE).replace(' ', '')})",
                           metavar="SIZE", remote=True, kind=parse_size)
    refresh: float = _opt(REFRESH, "object store: seconds between looks for newly published "
                                   f"snapshots (default {REFRESH:g})", metavar="SECONDS",
                          remote=True)
    import_recent: int = _opt(IMPORT_RECENT,
                              "object store: snapshots imported at mount, most recently "
                              "published first, so that new dumps deduplicate against them; "
                              "the others are imported when first looked into (default "
                              f"{IMPORT_RECENT})", metavar="N", remote=True)
    endpoint: str | None = _opt(None, "object store: S3 endpoint URL (or AWS_ENDPOINT_URL)",
                                metavar="URL", remote=True)
    profile: str | None = _opt(None, "object store: AWS profile for credentials",
                               metavar="NAME", remote=True)
    # the daemon process
    log: str | None = _opt(None, "log file (default: STORE/lzfs.log in the background, "
                                 "stderr with -f)", metavar="FILE")
    debug: bool = _opt(False, "log debug messages too (pyfuse3's, and boto3's for an object "
                              "store): for diagnosing, the log grows fast")
    # FUSE and kernel options from -o, passed through
    fuse: tuple[str, ...] = ()

    # ---- the command line ------------------------------------------------------------------

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """One flag per option, and -o for the same options by name (fstab, mount(8))."""
        for f in _fields():
            m = f.metadata
            flag = m["flag"] or "--" + f.name.replace("_", "-")
            kw: dict[str, Any] = {"dest": f.name, "default": None,
                                  "help": argparse.SUPPRESS if m["hidden"] else m["help"]}
            if f.type == "bool":
                kw["action"] = "store_const"
                kw["const"] = not f.default
            else:
                kw["metavar"] = m["metavar"]
                kw["type"] = _kind(f)
            parser.add_argument(flag, **kw)
        names = ", ".join(o for o in _o_names() if o)
        parser.add_argument("-o", action="append", default=[], metavar="OPTS", dest="o",
                            help="options, comma separated, as fstab and mount(8) pass them: "
                                 f"{names}; and FUSE's own ({', '.join(sorted(FUSE_FLAGS))}, "
                                 f"{', '.join(sorted(FUSE_VALUES))}=...)")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> MountOptions:
        """The options a command line gives: -o first, then flags (which win)."""
        values: dict[str, Any] = {}
        fuse: list[str] = []
        for item in (o for opt in args.o for o in opt.split(",")):
            name, eq, value = item.strip().partition("=")
            _parse_o(name.replace("-", "_"), value if eq else None, values, fuse)
        for f in _fields():
            given = getattr(args, f.name, None)
            if given is not None:
                values[f.name] = given
        return cls(**values, fuse=tuple(fuse))

    def argv(self) -> list[str]:
        """The flags that give these options to another `lzfs mount` (the daemon that the
        command starts in the background): only those that differ from the defaults."""
        out = []
        for f in _fields():
            value = getattr(self, f.name)
            if value == f.default:
                continue
            flag = f.metadata["flag"] or "--" + f.name.replace("_", "-")
            out.append(flag if f.type == "bool" else f"{flag}={value}")
        out += [f"-o{o}" for o in self.fuse]
        return out

    # ---- what they mean --------------------------------------------------------------------

    def remote(self) -> RemoteOptions:
        return RemoteOptions(self.endpoint, self.profile, self.cache, self.cache_size,
                             self.refresh, self.import_recent)

    def replace(self, **changes: Any) -> MountOptions:
        return dataclasses.replace(self, **changes)


def _fields() -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(MountOptions) if f.name != "fuse"]


def _kind(f: dataclasses.Field) -> Any:
    """What turns an option's text into its value."""
    return f.metadata["kind"] or (str if f.default is None else type(f.default))


def _o_names() -> list[str]:
    out = []
    for f in _fields():
        if f.metadata["hidden"] or f.name == "log":
            continue
        if f.type == "bool":
            out.append(f"no{f.name}" if f.default else f.name)
        else:
            out.append(f"{f.name}=")
    return out


def _parse_o(name: str, value: str | None, values: dict[str, Any], fuse: list[str]) -> None:
    if not name or name in FSTAB_ONLY or name.startswith(("x-", "comment")):
        return
    if (name in FUSE_FLAGS and value is None) or (name in FUSE_VALUES and value is not None):
        fuse.append(name if value is None else f"{name}={value}")
        return
    by_name = {f.name: f for f in _fields()}
    if value is None:  # a boolean: NAME sets it, noNAME clears it
        f = by_name.get(name) or by_name.get(name[2:] if name.startswith("no") else "")
        if f is not None and f.type == "bool":
            values[f.name] = f.name == name
            return
    else:
        f = by_name.get(name)
        if f is not None and f.type != "bool":
            kind = _kind(f)
            try:
                values[f.name] = kind(value)
            except ValueError:
                raise LzfsError(f"mount option {name}={value}: not a valid "
                                f"{f.metadata['metavar'] or 'value'}") from None
            return
    raise LzfsError(f"unknown mount option {name!r}" + ("" if value is None else
                                                        f" (={value})")
                    + f"; lzfs takes {', '.join(_o_names())}; FUSE takes "
                      f"{', '.join(sorted(FUSE_FLAGS | {v + '=' for v in FUSE_VALUES}))}")
