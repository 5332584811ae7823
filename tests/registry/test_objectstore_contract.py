"""The ObjectStore contract, run on every implementation: LocalStore and S3Store on a real
SeaweedFS server (see registry/objectstore/base.py for the contract itself)."""

from __future__ import annotations

import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from ebmops.core.errors import ObjectNotFound, StoreError
from registry.objectstore import LocalStore
from tests.registry.sync_fixtures import objstore, s3_store  # noqa: F401 - fixtures

MB = 1024 * 1024


def test_put_then_get_returns_the_same_bytes(objstore):
    objstore.put_bytes("a/b/c.bin", b"\x00\x01hello")
    objstore.put_bytes("empty", b"")
    assert objstore.get_bytes("a/b/c.bin") == b"\x00\x01hello"
    assert objstore.get_bytes("empty") == b""
    assert objstore.size("a/b/c.bin") == 7 and objstore.size("empty") == 0
    assert objstore.exists("a/b/c.bin") and objstore.exists("empty")


def test_overwrite_replaces_the_whole_object(objstore):
    objstore.put_bytes("k", b"x" * 1000)
    objstore.put_bytes("k", b"short")
    assert objstore.get_bytes("k") == b"short" and objstore.size("k") == 5
    assert objstore.list("") == ["k"]


def test_missing_key_raises_object_not_found(objstore, tmp_path):
    for call in (lambda: objstore.get_bytes("no/such"), lambda: objstore.size("no/such"),
                 lambda: objstore.get_file("no/such", tmp_path / "out")):
        with pytest.raises(ObjectNotFound) as info:
            call()
        assert info.value.key == "no/such" and "no/such" in str(info.value)
        assert isinstance(info.value, StoreError)
    assert not objstore.exists("no/such")
    assert objstore.size_or_none("no/such") is None


def test_a_prefix_of_other_keys_is_not_an_object(objstore):
    objstore.put_bytes("dir/file", b"1")
    assert not objstore.exists("dir")
    with pytest.raises(ObjectNotFound):
        objstore.get_bytes("dir")


def test_list_is_a_sorted_string_prefix_match(objstore):
    for k in ("m/b/2.json", "m/a/1.json", "m/ab/3.json", "n/1", "m/a/sub/4"):
        objstore.put_bytes(k, k.encode())
    assert objstore.list("m/a/") == ["m/a/1.json", "m/a/sub/4"]
    assert objstore.list("m/a") == ["m/a/1.json", "m/a/sub/4", "m/ab/3.json"]
    assert objstore.list("") == ["m/a/1.json", "m/a/sub/4", "m/ab/3.json", "m/b/2.json", "n/1"]
    assert objstore.list("zzz/") == [] and objstore.list("m/c") == []


def test_delete_removes_and_is_idempotent(objstore):
    objstore.put_bytes("x/y", b"1")
    objstore.put_bytes("x/z", b"2")
    objstore.delete("x/y")
    objstore.delete("x/y")
    objstore.delete("never/was")
    assert not objstore.exists("x/y") and objstore.list("x/") == ["x/z"]


def test_put_file_and_get_file_round_trip(objstore, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(300_000))
    assert objstore.put_file("files/model.pt", src) == 300_000
    out = tmp_path / "out.bin"
    assert objstore.get_file("files/model.pt", out) == 300_000
    assert out.read_bytes() == src.read_bytes() and objstore.size("files/model.pt") == 300_000


def test_put_file_of_a_missing_source_changes_nothing(objstore, tmp_path):
    with pytest.raises(FileNotFoundError):
        objstore.put_file("k", tmp_path / "absent")
    assert objstore.list("") == []


@pytest.mark.parametrize("bad", ["", "/abs", "a//b", "../up", "a/../b", "a/./b", ".hidden", "a/.tmp/x", "sp ace",
                                 "back\\slash", "a/"])
def test_invalid_keys_are_refused_before_any_io(objstore, bad):
    with pytest.raises(ValueError, match="key"):
        objstore.put_bytes(bad, b"1")
    assert objstore.list("") == []


def test_concurrent_writers_on_one_store(objstore):
    payloads = {f"c/{i:02d}": os.urandom(1000 + i) for i in range(24)}
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda kv: objstore.put_bytes(*kv), payloads.items()))
    assert objstore.list("c/") == sorted(payloads)
    assert all(objstore.get_bytes(k) == v for k, v in payloads.items())


def test_a_fresh_store_reads_as_empty_and_is_created_on_first_write(request, tmp_path, objstore):
    # A store whose directory / bucket does not exist yet: reads see nothing, the first write creates it.
    kind = "local" if isinstance(objstore, LocalStore) else "s3"
    if kind == "local":
        fresh = LocalStore(tmp_path / "not" / "yet")
    else:
        fresh = s3_store(request.getfixturevalue("seaweedfs"), bucket=f"ebmops-fresh-{uuid.uuid4().hex[:8]}",
                         prefix="")
    assert fresh.list("") == [] and not fresh.exists("k")
    with pytest.raises(ObjectNotFound):
        fresh.get_bytes("k")
    fresh.put_bytes("k", b"v")
    assert fresh.get_bytes("k") == b"v"
    if kind == "local":
        assert (tmp_path / "not" / "yet" / "k").is_file()
    else:
        fresh.client.head_bucket(Bucket=fresh.bucket)  # raises unless the bucket now exists


@pytest.mark.parametrize("via", ["put_bytes", "put_file"])
def test_a_concurrent_reader_never_sees_a_partial_object(objstore, tmp_path, via):
    """A reader polling during large writes sees nothing or a whole object, never a prefix, and
    listings never show a write in progress. put_file of 7 MB takes S3's multipart path here."""
    old, new = b"o" * (3 * MB), b"n" * (7 * MB)
    src = tmp_path / "new.bin"
    src.write_bytes(new)
    key = "atomic/obj"
    seen: set[str] = set()
    bad: list[str] = []
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            try:
                data = objstore.get_bytes(key)
            except ObjectNotFound:
                seen.add("missing")
                data = None
            if data is not None:
                seen.add({old: "old", new: "new"}.get(data, "partial"))
                if data not in (old, new):
                    bad.append(f"read {len(data)} bytes")
            listed = objstore.list("atomic/")
            if listed not in ([], [key]):
                bad.append(f"listed {listed}")

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    deadline = time.monotonic() + 20
    while "missing" not in seen and time.monotonic() < deadline:
        time.sleep(0.005)
    objstore.put_bytes(key, old)  # a new key appears whole
    while "old" not in seen and time.monotonic() < deadline:
        time.sleep(0.005)
    if via == "put_file":  # an overwrite replaces whole
        objstore.put_file(key, src)
    else:
        objstore.put_bytes(key, new)
    while "new" not in seen and time.monotonic() < deadline:
        time.sleep(0.005)
    stop.set()
    t.join(10)
    assert bad == [], bad[:5]
    assert seen == {"missing", "old", "new"}


def test_s3_refuses_wrong_credentials_with_a_store_error(seaweedfs):
    from registry.objectstore import S3Store

    good = s3_store(seaweedfs)
    good.put_bytes("k", b"v")
    wrong = S3Store(seaweedfs.endpoint_url, good.bucket, access_key=seaweedfs.access_key, secret_key="wrong-secret",
                    prefix=good.prefix, max_attempts=1)
    with pytest.raises(StoreError, match="access_key/secret_key") as info:
        wrong.get_bytes("k")
    assert not isinstance(info.value, ObjectNotFound)
    with pytest.raises(StoreError, match="access_key/secret_key"):
        wrong.put_bytes("k2", b"v")
    assert good.list("") == ["k"]


def test_s3_unreachable_endpoint_is_a_store_error():
    from registry.objectstore import S3Store
    from tests.servers import free_port

    dead = S3Store(f"http://127.0.0.1:{free_port()}", "ebmops-dead", access_key="a", secret_key="b",
                   max_attempts=1, connect_timeout=0.5)
    with pytest.raises(StoreError, match="reachable"):
        dead.get_bytes("k")


def test_s3_stores_share_one_client_per_endpoint_and_credentials(seaweedfs):
    a, b = s3_store(seaweedfs), s3_store(seaweedfs, bucket="ebmops-other")
    assert a.client is b.client
    other = s3_store(seaweedfs, max_attempts=1)  # other client settings: another client
    assert other.client is not a.client


def test_probe_tells_a_missing_store_from_an_empty_one(objstore, request, tmp_path):
    from tests.registry.sync_fixtures import make_store

    objstore.put_bytes("k", b"1")
    objstore.probe()  # exists and answers: no error
    if isinstance(objstore, LocalStore):
        missing = LocalStore(tmp_path / "not-mounted")
    else:
        missing = make_store("s3", request, tmp_path, bucket=f"absent-{uuid.uuid4().hex[:8]}")
    assert missing.list("") == []  # an absent store lists as empty: only probe tells them apart
    with pytest.raises(StoreError) as err:
        missing.probe()
    assert "does not exist" in str(err.value)
