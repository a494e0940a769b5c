"""One table of mount options: flags, -o names and the daemon's argv all come from
MountOptions, and an unknown -o name is refused by name."""

from __future__ import annotations

import argparse

import pytest

from lzfs.core.options import MountOptions
from lzfs.core.policy import COMMIT_INTERVAL
from lzfs.errors import LzfsError


def _parse(*argv: str) -> MountOptions:
    p = argparse.ArgumentParser()
    MountOptions.add_arguments(p)
    return MountOptions.from_args(p.parse_args(list(argv)))


def test_defaults_come_from_their_owners():
    assert _parse() == MountOptions()
    assert MountOptions().commit_interval == COMMIT_INTERVAL


def test_every_option_can_be_given_with_o_by_name_and_flags_win():
    opts = _parse("-o", "cache_mb=256,nostage,commit_interval=2,domain=a",
                  "-o", "cache_size=50G,allow_other,noatime,fsname=x,_netdev,defaults",
                  "--domain", "b")
    assert (opts.cache_mb, opts.stage, opts.commit_interval) == (256, False, 2.0)
    assert opts.cache_size == 50 << 30 and opts.allow_other
    assert opts.domain == "b"  # the flag after -o
    assert opts.fuse == ("noatime", "fsname=x")  # fstab's own words are dropped


@pytest.mark.parametrize("bad", ["cache_mib=64", "bogus", "cache_mb", "nocache_mb",
                                 "commit_interval=soon"])
def test_an_unknown_or_malformed_o_option_is_refused_by_name(bad):
    with pytest.raises(LzfsError) as e:
        _parse("-o", bad)
    assert bad.partition("=")[0] in str(e.value)


def test_the_daemons_argv_gives_back_the_same_options():
    opts = _parse("-o", "nostage,cache_mb=64,ro", "--cache", "/c", "--debug",
                  "--cache-size", "1G", "--stage-backlog", "0")
    assert _parse(*opts.argv()) == opts
    assert _parse(*MountOptions().argv()) == MountOptions() and MountOptions().argv() == []
