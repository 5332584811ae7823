"""S3Store: a region's object store in an S3 bucket, through boto3 (AWS, SeaweedFS, MinIO, ...).

Design points:

* One boto3 client per (endpoint, credentials, region, tuning) is shared by every S3Store in
  the process: clients are thread-safe and keep a pool of HTTP connections, so publishing to a
  region does not pay a TCP/TLS handshake per object.
* Path-style addressing (``endpoint/bucket/key``) works with every S3 server, including ones
  without wildcard DNS.
* A single PUT, and a multipart upload on completion, replace an object atomically: readers
  never see a partial object. Files from ``multipart_threshold`` up are uploaded in concurrent
  parts by boto3's transfer manager.
* The bucket is created on the first write when it is missing; reads of a missing bucket
  behave like reads of an empty store (nothing was published to the region yet).
* boto3 is imported here only, and this module only when an S3 store is used.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from ebmops.core.errors import ObjectNotFound, StoreError
from registry.objectstore.base import ObjectStore, check_key, check_prefix

_CLIENTS: dict[tuple, Any] = {}
_CLIENTS_LOCK = threading.Lock()
_NOT_FOUND = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}
_CHUNK = 1 << 20


def shared_client(endpoint_url: str | None, access_key: str | None, secret_key: str | None, region_name: str,
                  *, max_pool_connections: int = 32, connect_timeout: float = 5.0, read_timeout: float = 60.0,
                  max_attempts: int = 3):
    """The process-wide boto3 S3 client for these parameters (created once, then reused)."""
    ident = (endpoint_url, access_key, secret_key, region_name, max_pool_connections, connect_timeout, read_timeout,
             max_attempts)
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(ident)
        if client is None:
            # A private Session: boto3's default session is not safe to create clients from concurrently.
            session = boto3.session.Session(aws_access_key_id=access_key, aws_secret_access_key=secret_key,
                                            region_name=region_name)
            client = session.client("s3", endpoint_url=endpoint_url, config=Config(
                s3={"addressing_style": "path"}, max_pool_connections=max_pool_connections,
                connect_timeout=connect_timeout, read_timeout=read_timeout,
                retries={"max_attempts": max_attempts, "mode": "standard"},
                # Checksums only when the operation requires them: not every S3 server speaks
                # the newer flexible-checksum trailers, and content addressing checks integrity anyway.
                request_checksum_calculation="when_required", response_checksum_validation="when_required"))
            _CLIENTS[ident] = client
        return client


def _code(e: ClientError) -> str:
    err = e.response.get("Error", {})
    return str(err.get("Code") or e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))


class S3Store(ObjectStore):
    """Object store in ``bucket`` (under an optional key ``prefix``) on an S3 endpoint."""

    def __init__(self, endpoint_url: str | None, bucket: str, access_key: str | None = None,
                 secret_key: str | None = None, region_name: str = "us-east-1", prefix: str = "", *,
                 multipart_threshold: int = 16 * 1024 * 1024, max_concurrency: int = 8,
                 connect_timeout: float = 5.0, read_timeout: float = 60.0, max_attempts: int = 3):
        if not bucket or not (3 <= len(bucket) <= 63):
            raise ValueError(f"S3 bucket name {bucket!r} must be 3-63 characters")
        self.endpoint_url = endpoint_url
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if self.prefix:
            check_key(self.prefix)
        self.client = shared_client(endpoint_url, access_key, secret_key, region_name,
                                    max_pool_connections=max(32, 4 * max_concurrency),
                                    connect_timeout=connect_timeout, read_timeout=read_timeout,
                                    max_attempts=max_attempts)
        self.transfer = TransferConfig(multipart_threshold=multipart_threshold, multipart_chunksize=8 * 1024 * 1024,
                                       max_concurrency=max_concurrency, use_threads=True)
        self.multipart_threshold = multipart_threshold
        self.description = f"s3:{endpoint_url or 'aws'}/{bucket}" + (f"/{self.prefix}" if self.prefix else "")
        self._bucket_ready = False
        self._bucket_lock = threading.Lock()

    # ---- helpers -------------------------------------------------------------------------
    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _error(self, what: str, key: str, e: Exception) -> StoreError:
        if isinstance(e, ClientError):
            code = _code(e)
            if code == "NoSuchBucket":
                return ObjectNotFound(f"{self.description}: no object {key}: the bucket does not exist "
                                      "(nothing was published to this region yet)", key=key)
            if code in _NOT_FOUND:
                return ObjectNotFound(f"{self.description}: no object {key}", key=key)
            msg = e.response.get("Error", {}).get("Message", "")
            hint = " (check the region's access_key/secret_key)" if code in {
                "AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId", "403"} else ""
            return StoreError(f"{self.description}: {what} {key} failed: {code} {msg}{hint}")
        return StoreError(f"{self.description}: {what} {key} failed: {type(e).__name__}: {e} "
                          "(is the endpoint reachable?)")

    def ensure_bucket(self) -> None:
        """Create the bucket when it does not exist (once per store object)."""
        if self._bucket_ready:
            return
        with self._bucket_lock:
            if self._bucket_ready:
                return
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except ClientError as e:
                if _code(e) not in _NOT_FOUND:
                    raise self._error("checking bucket", self.bucket, e) from e
                try:
                    self.client.create_bucket(Bucket=self.bucket)
                except ClientError as ce:
                    if _code(ce) not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                        raise self._error("creating bucket", self.bucket, ce) from ce
            except BotoCoreError as e:
                raise self._error("checking bucket", self.bucket, e) from e
            self._bucket_ready = True

    # ---- the port --------------------------------------------------------------------------
    def put_bytes(self, key: str, data: bytes) -> None:
        k = self._key(key)
        self.ensure_bucket()
        try:
            self.client.put_object(Bucket=self.bucket, Key=k, Body=data)
        except (ClientError, BotoCoreError) as e:
            raise self._error("writing", key, e) from e

    def put_file(self, key: str, path: Path) -> int:
        k = self._key(key)
        path = Path(path)
        size = path.stat().st_size
        self.ensure_bucket()
        try:
            if size < self.multipart_threshold:
                with open(path, "rb") as f:  # one PUT, one round trip
                    self.client.put_object(Bucket=self.bucket, Key=k, Body=f)
            else:  # concurrent multipart upload; the object appears when the upload completes
                self.client.upload_file(str(path), self.bucket, k, Config=self.transfer)
        except (ClientError, BotoCoreError) as e:
            raise self._error("writing", key, e) from e
        except Exception as e:  # boto3's transfer manager wraps errors in S3UploadFailedError
            cause = e.__cause__ if isinstance(e.__cause__, (ClientError, BotoCoreError)) else e
            raise self._error("writing", key, cause) from e
        return size

    def get_bytes(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except (ClientError, BotoCoreError) as e:
            raise self._error("reading", key, e) from e

    def get_file(self, key: str, path: Path) -> int:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
            n = 0
            with open(path, "wb") as f:
                for chunk in body.iter_chunks(_CHUNK):
                    f.write(chunk)
                    n += len(chunk)
            return n
        except (ClientError, BotoCoreError) as e:
            raise self._error("reading", key, e) from e

    def exists(self, key: str) -> bool:
        return self.size_or_none(key) is not None

    def size(self, key: str) -> int:
        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=self._key(key))["ContentLength"])
        except (ClientError, BotoCoreError) as e:
            raise self._error("inspecting", key, e) from e

    def list(self, prefix: str = "") -> list[str]:
        check_prefix(prefix)
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        cut = len(self.prefix) + 1 if self.prefix else 0
        keys: list[str] = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
                keys.extend(obj["Key"][cut:] for obj in page.get("Contents", ()))
        except ClientError as e:
            if _code(e) == "NoSuchBucket":
                return []
            raise self._error("listing", prefix or "/", e) from e
        except BotoCoreError as e:
            raise self._error("listing", prefix or "/", e) from e
        return sorted(k for k in keys if not k.endswith("/"))

    def probe(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as e:
            if _code(e) in _NOT_FOUND or _code(e) == "NoSuchBucket":
                raise StoreError(f"{self.description}: bucket {self.bucket} does not exist (a wrong bucket name, or "
                                 "nothing was ever published to this region)") from e
            raise self._error("checking bucket", self.bucket, e) from e
        except BotoCoreError as e:
            raise self._error("checking bucket", self.bucket, e) from e

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as e:
            if _code(e) not in _NOT_FOUND:
                raise self._error("deleting", key, e) from e
        except BotoCoreError as e:
            raise self._error("deleting", key, e) from e
