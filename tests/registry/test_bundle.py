"""Signed, content-addressed bundles on LocalStore and on S3 (SeaweedFS): publish, fetch, and
every way a bundle must be refused without touching the destination."""

from __future__ import annotations

import json
import threading
import time

import pytest

from ebmops.core.errors import BundleError, StoreError
from registry.bundle import (
    blob_key,
    bundle_dir,
    fetch_bundle,
    file_sha256,
    list_versions,
    manifest_key,
    publish_bundle,
)
from registry.objectstore import LocalStore
from tests.registry.sync_fixtures import FEATURES, objstore, other_key, save_energy_model, snapshot, sync_key  # noqa: F401

MODEL = "ebm-anomaly"


@pytest.fixture
def model_file(tmp_path):
    return save_energy_model(tmp_path / "model.pt", threshold=0.75, hidden=64)


def publish(store, model_file, key, version="1", threshold=0.75, **kw):
    return publish_bundle(store, model_file, model_name=MODEL, version=version, features=FEATURES,
                          threshold=threshold, gate_verdict="pass", key=key, **kw)


def test_publish_then_fetch_installs_a_verified_bundle(objstore, model_file, sync_key, tmp_path):
    import torch

    stats = publish(objstore, model_file, sync_key, metadata={"mlflow_run_id": "abc"})
    size = model_file.stat().st_size
    assert (stats.bytes_uploaded, stats.blobs_uploaded, stats.blobs_skipped) == (size, 1, 0)
    assert stats.manifest_written and stats.seconds > 0
    sha = file_sha256(model_file)
    assert objstore.list("") == [blob_key(sha), manifest_key(MODEL, "1")]
    assert blob_key(sha) == f"blobs/sha256/{sha[:2]}/{sha}"

    got = fetch_bundle(objstore, MODEL, "1", sync_key, tmp_path / "node")
    m = got.manifest
    assert (m.model_name, m.version, m.features, m.threshold, m.gate_verdict) == (MODEL, "1", FEATURES, 0.75, "pass")
    assert m.metadata == {"mlflow_run_id": "abc"} and m.files["model"].sha256 == sha and m.signature["value"]
    assert got.path == bundle_dir(tmp_path / "node", MODEL, "1") and got.bytes_downloaded == size
    assert got.model_path.read_bytes() == model_file.read_bytes()
    assert json.loads((got.path / "manifest.json").read_bytes())["signature"] == m.signature
    scripted = torch.jit.load(str(got.model_path))
    assert scripted.threshold.item() == pytest.approx(m.threshold)
    assert scripted(torch.rand(5, len(FEATURES))).shape == (5,)
    assert list_versions(objstore, MODEL) == ["1"]


def test_publishing_again_uploads_nothing(objstore, model_file, sync_key):
    publish(objstore, model_file, sync_key)
    before = objstore.get_bytes(manifest_key(MODEL, "1"))
    again = publish(objstore, model_file, sync_key)
    assert (again.bytes_uploaded, again.blobs_uploaded, again.blobs_skipped) == (0, 0, 1)
    assert not again.manifest_written and objstore.get_bytes(manifest_key(MODEL, "1")) == before


def test_a_new_version_with_the_same_file_shares_its_blob(objstore, model_file, sync_key):
    publish(objstore, model_file, sync_key, version="1")
    second = publish(objstore, model_file, sync_key, version="2")
    assert second.bytes_uploaded == 0 and second.manifest_written
    assert list_versions(objstore, MODEL) == ["1", "2"] and len(objstore.list("blobs/")) == 1


def test_restating_the_gate_verdict_rewrites_only_the_manifest(objstore, model_file, sync_key, tmp_path):
    publish(objstore, model_file, sync_key)
    first = fetch_bundle(objstore, MODEL, "1", sync_key, tmp_path / "a").manifest
    stats = publish_bundle(objstore, model_file, model_name=MODEL, version="1", features=FEATURES, threshold=0.75,
                           gate_verdict="override", key=sync_key)
    assert stats.manifest_written and stats.bytes_uploaded == 0
    second = fetch_bundle(objstore, MODEL, "1", sync_key, tmp_path / "b").manifest
    assert second.gate_verdict == "override" and second.created_at == first.created_at


def test_a_version_is_immutable(objstore, model_file, sync_key, tmp_path):
    publish(objstore, model_file, sync_key)
    before = snapshot_store(objstore)
    other = save_energy_model(tmp_path / "other.pt", seed=1, hidden=64)
    for kwargs in ({"threshold": 0.5}, {"model_file": other}):
        args = {"model_file": model_file, **kwargs}
        with pytest.raises(BundleError, match="immutable") as info:
            publish(objstore, args.pop("model_file"), sync_key, **args)
        assert info.value.reason == "version-conflict"
    assert snapshot_store(objstore) == before


def test_manifest_is_written_after_every_blob(objstore, model_file, sync_key, tmp_path):
    extra = tmp_path / "reference.json"
    extra.write_text('{"mean": [0.5]}')
    writes: list[str] = []
    put_bytes, put_file = objstore.put_bytes, objstore.put_file
    objstore.put_bytes = lambda k, d: (writes.append(k), put_bytes(k, d))[1]
    objstore.put_file = lambda k, p: (writes.append(k), put_file(k, p))[1]
    publish(objstore, model_file, sync_key, extra_files={"reference.json": extra})
    assert writes[-1] == manifest_key(MODEL, "1") and sorted(writes[:-1]) == sorted(
        [blob_key(file_sha256(model_file)), blob_key(file_sha256(extra))])
    got = fetch_bundle(objstore, MODEL, "1", sync_key, tmp_path / "node")
    assert got.files["reference.json"].read_text() == '{"mean": [0.5]}'


def test_a_failed_blob_upload_leaves_no_manifest(tmp_path, model_file, sync_key):
    class BrokenUploads(LocalStore):
        def put_file(self, key, path):
            raise StoreError(f"{self.description}: disk full writing {key}")

    store = BrokenUploads(tmp_path / "store")
    with pytest.raises(StoreError, match="disk full"):
        publish(store, model_file, sync_key)
    assert store.list("") == []


# ---- refusals: the destination must stay exactly as it was ----------------------------------

@pytest.fixture
def published(objstore, model_file, sync_key, tmp_path):
    """A store holding version 1, and a node directory that already serves an earlier bundle."""
    publish(objstore, model_file, sync_key)
    older = save_energy_model(tmp_path / "older.pt", seed=3, hidden=64)
    publish(objstore, older, sync_key, version="0")
    dest = tmp_path / "node"
    fetch_bundle(objstore, MODEL, "0", sync_key, dest)
    return objstore, dest, snapshot(dest)


def refused(store, key, dest, reason, version="1", **kw):
    with pytest.raises(BundleError) as info:
        fetch_bundle(store, MODEL, version, key, dest, **kw)
    assert info.value.reason == reason, str(info.value)
    assert info.value.model == MODEL and info.value.version == version
    return info.value


def test_tampered_manifest_is_refused(published, sync_key):
    store, dest, before = published
    doc = json.loads(store.get_bytes(manifest_key(MODEL, "1")))
    doc["threshold"] = 99.0
    store.put_bytes(manifest_key(MODEL, "1"), json.dumps(doc).encode())
    err = refused(store, sync_key, dest, "bad-signature")
    assert "modified or signed with another key" in str(err)
    assert snapshot(dest) == before


def test_manifest_signed_with_another_key_is_refused(published, other_key):
    store, dest, before = published
    err = refused(store, other_key, dest, "bad-signature")
    assert "key rotated" in str(err)
    assert snapshot(dest) == before


def test_unsigned_manifest_is_refused(published, sync_key):
    store, dest, before = published
    doc = json.loads(store.get_bytes(manifest_key(MODEL, "1")))
    del doc["signature"]
    store.put_bytes(manifest_key(MODEL, "1"), json.dumps(doc).encode())
    assert "unsigned" in str(refused(store, sync_key, dest, "bad-signature"))
    assert snapshot(dest) == before


@pytest.mark.parametrize("damage", ["same-size", "truncated"])
def test_tampered_blob_is_refused(published, sync_key, model_file, damage):
    store, dest, before = published
    key = blob_key(file_sha256(model_file))
    data = bytearray(store.get_bytes(key))
    if damage == "same-size":
        data[len(data) // 2] ^= 0xFF
        reason = "blob-hash-mismatch"
    else:
        data = data[:-10]
        reason = "blob-size-mismatch"
    store.put_bytes(key, bytes(data))
    err = refused(store, sync_key, dest, reason)
    assert err.key == key
    assert snapshot(dest) == before


def test_missing_blob_is_refused(published, sync_key, model_file):
    store, dest, before = published
    store.delete(blob_key(file_sha256(model_file)))
    assert "publish the version again" in str(refused(store, sync_key, dest, "blob-missing"))
    assert snapshot(dest) == before


def test_missing_manifest_is_refused(published, sync_key):
    store, dest, before = published
    refused(store, sync_key, dest, "manifest-missing", version="7")
    assert snapshot(dest) == before


def test_a_manifest_replayed_under_another_version_is_refused(published, sync_key):
    store, dest, before = published
    store.put_bytes(manifest_key(MODEL, "2"), store.get_bytes(manifest_key(MODEL, "1")))
    refused(store, sync_key, dest, "manifest-mismatch", version="2")
    assert snapshot(dest) == before


def test_a_refused_fetch_into_a_new_directory_leaves_no_trace(objstore, model_file, sync_key, tmp_path):
    publish(objstore, model_file, sync_key)
    objstore.delete(blob_key(file_sha256(model_file)))
    refused(objstore, sync_key, tmp_path / "fresh" / "node", "blob-missing")
    assert not (tmp_path / "fresh").exists()


# ---- the node's blob cache ------------------------------------------------------------------

def test_verified_blobs_are_cached_and_a_damaged_cache_is_healed(objstore, model_file, sync_key, tmp_path):
    publish(objstore, model_file, sync_key)
    cache = tmp_path / "cache"
    first = fetch_bundle(objstore, MODEL, "1", sync_key, tmp_path / "a", cache_dir=cache)
    assert first.bytes_downloaded == model_file.stat().st_size and first.blobs_from_cache == 0
    second = fetch_bundle(objstore, MODEL, "1", sync_key, tmp_path / "b", cache_dir=cache)
    assert second.bytes_downloaded == 0 and second.blobs_from_cache == 1
    assert second.model_path.read_bytes() == model_file.read_bytes()
    # Same install again: nothing to do.
    assert fetch_bundle(objstore, MODEL, "1", sync_key, tmp_path / "b", cache_dir=cache).bytes_downloaded == 0
    # A damaged cache entry is re-downloaded, never served.
    (cached,) = [p for p in cache.rglob("*") if p.is_file()]
    cached.write_bytes(b"\x00" * cached.stat().st_size)
    third = fetch_bundle(objstore, MODEL, "1", sync_key, tmp_path / "c", cache_dir=cache)
    assert third.bytes_downloaded == model_file.stat().st_size
    assert cached.read_bytes() == model_file.read_bytes()


def test_a_damaged_install_is_replaced_on_fetch(objstore, model_file, sync_key, tmp_path):
    publish(objstore, model_file, sync_key)
    got = fetch_bundle(objstore, MODEL, "1", sync_key, tmp_path / "node")
    got.model_path.write_bytes(b"garbage")
    again = fetch_bundle(objstore, MODEL, "1", sync_key, tmp_path / "node")
    assert again.model_path.read_bytes() == model_file.read_bytes()
    assert sorted(p.name for p in (tmp_path / "node" / MODEL).iterdir()) == ["1"]


def test_a_verified_install_is_never_moved_by_a_concurrent_fetch(objstore, model_file, sync_key, tmp_path,
                                                                  monkeypatch):
    """Replicas on one host share an install directory. A fetch that checked before another replica's
    install landed must not move that install: the other replica may be loading from it right then."""
    import registry.bundle as bundle

    publish(objstore, model_file, sync_key)
    first = fetch_bundle(objstore, MODEL, "1", sync_key, tmp_path / "node")
    inode = first.model_path.stat().st_ino
    real = bundle._installed
    calls = []

    def checked_too_early(final, raw, manifest):  # this fetch's first look happened before the install
        calls.append(final)
        return None if len(calls) == 1 else real(final, raw, manifest)

    monkeypatch.setattr(bundle, "_installed", checked_too_early)
    second = fetch_bundle(objstore, MODEL, "1", sync_key, tmp_path / "node")
    assert len(calls) >= 2 and second.path == first.path
    assert first.model_path.stat().st_ino == inode  # the same file, not a fresh copy renamed over it
    assert sorted(p.name for p in (tmp_path / "node").iterdir()) == [".blobs", MODEL]
    assert sorted(p.name for p in (tmp_path / "node" / MODEL).iterdir()) == ["1"]


def test_replicas_fetching_into_one_directory_each_load_the_model(objstore, model_file, sync_key, tmp_path):
    import torch

    publish(objstore, model_file, sync_key)
    start = threading.Barrier(6)
    errors: list[BaseException] = []

    def replica():
        start.wait()
        try:
            got = fetch_bundle(objstore, MODEL, "1", sync_key, tmp_path / "node")
            torch.jit.load(str(got.model_path))
        except BaseException as e:  # noqa: BLE001 - collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=replica) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert sorted(p.name for p in (tmp_path / "node" / MODEL).iterdir()) == ["1"]


def snapshot_store(store) -> dict[str, bytes]:
    return {k: store.get_bytes(k) for k in store.list("")}


def test_a_reader_during_publish_sees_no_bundle_or_a_whole_one(objstore, sync_key, tmp_path):
    """Blobs land before the manifest: a node polling while the control plane publishes finds
    no manifest, then a complete bundle, never a manifest whose blob is missing."""
    big = save_energy_model(tmp_path / "big.pt", hidden=20000)  # about 0.8 MB
    reasons: list[str] = []
    done = threading.Event()
    installed: list = []

    def node():
        while not installed and not done.is_set():
            try:
                installed.append(fetch_bundle(objstore, MODEL, "1", sync_key, tmp_path / "node"))
            except BundleError as e:
                reasons.append(e.reason)

    t = threading.Thread(target=node, daemon=True)
    t.start()
    while not reasons:  # the node is polling before publishing starts
        time.sleep(0.001)
    publish(objstore, big, sync_key)
    t.join(20)
    done.set()
    assert installed and installed[0].model_path.read_bytes() == big.read_bytes()
    assert set(reasons) == {"manifest-missing"}
