"""S3-compatible object storage through boto3.

Timeouts and retries are bounded (connect 5 s, read 60 s, 3 attempts): a node whose endpoint
died must fail a publication with a clear error within seconds, not sit in botocore's default
back-off. Large packs go up with s3transfer's multipart upload, which S3 also makes visible
only once complete, so a PUT is atomic either way.
"""

from __future__ import annotations

import threading
from pathlib import Path

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from lzfs.objectstore.protocol import NoSuchObject, ObjectInfo, RemoteError
from lzfs.objectstore.ranged import URL_LIFETIME, RangedGetter, Unreachable, Unsupported

_CONFIG = Config(connect_timeout=5, read_timeout=60, retries={"max_attempts": 3,
                                                                "mode": "standard"},
                 max_pool_connections=32)
_TRANSFER = TransferConfig(multipart_threshold=64 << 20, multipart_chunksize=64 << 20,
                           max_concurrency=4)


class S3Backend:
    def __init__(self, bucket: str, prefix: str, endpoint: str | None,
                 profile: str | None = None) -> None:
        self.bucket = bucket
        self.prefix = f"{prefix}/" if prefix else ""
        self.endpoint = endpoint
        self.url = f"s3://{bucket}/{prefix}" + (f" at {endpoint}" if endpoint else "")
        self.spec = f"s3://{bucket}/{prefix}"  # as lzfs commands take it (with --endpoint)
        try:
            session = boto3.session.Session(profile_name=profile)
            self.client = session.client("s3", endpoint_url=endpoint, config=_CONFIG)
        except BotoCoreError as exc:
            raise RemoteError(f"{self.url}: {exc}") from None
        self._lock = threading.Lock()
        self._ranged = RangedGetter(self._presign)

    def _presign(self, full_key: str) -> str:
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": full_key},
            ExpiresIn=URL_LIFETIME)

    def _fail(self, exc: Exception, what: str) -> RemoteError:
        if isinstance(exc, NoCredentialsError):
            return RemoteError(f"{self.url}: no credentials; set AWS_ACCESS_KEY_ID and "
                               f"AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)")
        if isinstance(exc, ClientError):
            code = exc.response.get("Error", {}).get("Code", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("NoSuchBucket",) or (what == "bucket" and status == 404):
                return RemoteError(f"{self.url}: bucket {self.bucket} does not exist; create it "
                                   f"first (or pass --create-bucket to mkfs)")
            if code in ("NoSuchKey", "404") or status == 404:
                return NoSuchObject(f"{self.url}: no object {what}")
            if status == 403 or code in ("AccessDenied", "InvalidAccessKeyId",
                                         "SignatureDoesNotMatch", "403"):
                return RemoteError(f"{self.url}: access denied ({code or status}); check the "
                                   f"credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)")
            return RemoteError(f"{self.url}: {what}: {code or status}: "
                               f"{exc.response.get('Error', {}).get('Message', '')}".rstrip(": "))
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return RemoteError(f"{self.url}: cannot reach the object store ({text})")

    def check(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(exc, "bucket") from None

    def create_bucket(self) -> None:
        try:
            self.client.create_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou",
                                                                 "BucketAlreadyExists"):
                raise self._fail(exc, "bucket") from None
        except BotoCoreError as exc:
            raise self._fail(exc, "bucket") from None

    def put(self, key: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=data)
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(exc, key) from None

    def put_file(self, key: str, path: Path) -> None:
        if path.stat().st_size < _TRANSFER.multipart_threshold:  # one PUT, no transfer
            self.put(key, path.read_bytes())                     # manager to start and stop
            return
        try:
            self.client.upload_file(str(path), self.bucket, self.prefix + key, Config=_TRANSFER)
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(exc, key) from None
        except S3UploadFailedError as exc:  # s3transfer wraps failures in its own type
            raise RemoteError(f"{self.url}: uploading {key} failed: "
                              f"{str(exc).splitlines()[0] if str(exc) else exc!r}") from None

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        kw = {}
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            kw["Range"] = f"bytes={offset}-{end}"
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.prefix + key,
                                          **kw)["Body"].read()
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(exc, key) from None

    def get_into(self, key: str, offset: int, buf: memoryview) -> int:
        """A ranged GET into ``buf`` without a new ``bytes`` (ranged.py says why); boto3's
        ``get`` where that path does not apply, so failures read as they always have."""
        try:
            return self._ranged.get_into(self.prefix + key, offset, buf)
        except Unreachable as exc:
            raise RemoteError(f"{self.url}: cannot reach the object store ({exc})") from None
        except (BotoCoreError, ClientError) as exc:  # signing: no credentials, say
            raise self._fail(exc, key) from None
        except Unsupported:
            data = self.get(key, offset, len(buf))
            buf[:len(data)] = data
            return len(data)

    def head(self, key: str) -> ObjectInfo | None:
        try:
            r = self.client.head_object(Bucket=self.bucket, Key=self.prefix + key)
        except (BotoCoreError, ClientError) as exc:
            err = self._fail(exc, key)
            if isinstance(err, NoSuchObject):
                return None
            raise err from None
        return ObjectInfo(key, r["ContentLength"], r["LastModified"].timestamp())

    def list(self, prefix: str, start_after: str = "") -> list[ObjectInfo]:
        out = []
        kw = {"StartAfter": self.prefix + start_after} if start_after else {}
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix + prefix, **kw)
            for page in pages:
                for o in page.get("Contents", []):
                    out.append(ObjectInfo(o["Key"][len(self.prefix):], o["Size"],
                                          o["LastModified"].timestamp()))
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(exc, "bucket") from None
        return out

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.prefix + key)
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(exc, key) from None

    def touch(self, key: str) -> None:
        """Renew LastModified without sending the bytes again (a copy onto itself)."""
        try:
            self.client.copy_object(Bucket=self.bucket, Key=self.prefix + key,
                                    CopySource={"Bucket": self.bucket, "Key": self.prefix + key},
                                    MetadataDirective="REPLACE", Metadata={"lzfs": "renewed"})
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(exc, key) from None
