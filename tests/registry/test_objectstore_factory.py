"""Picking a region's object store from settings."""

import pytest
from pydantic import ValidationError

from ebmops.core.settings import load_settings
from registry.objectstore import LocalStore, S3Store, store_for_region, stores_for_regions


def test_unlisted_regions_get_a_local_store_under_home(tmp_path):
    settings = load_settings(home=tmp_path / "home")
    stores = stores_for_regions(settings)
    assert list(stores) == settings.data.regions
    assert all(isinstance(s, LocalStore) for s in stores.values())
    assert stores["eu-west"].root == (tmp_path / "home" / "stores" / "eu-west").resolve()


def test_s3_regions_get_an_s3_store_from_their_settings(tmp_path):
    settings = load_settings(home=tmp_path, sync={"regions": {
        "us-east": {"kind": "s3", "endpoint_url": "http://127.0.0.1:1", "access_key": "a", "secret_key": "b",
                    "prefix": "prod"},
        "eu-west": {"kind": "local", "path": str(tmp_path / "eu")}}})
    us = store_for_region(settings, "us-east")
    assert isinstance(us, S3Store) and (us.bucket, us.prefix, us.endpoint_url) == ("ebmops-us-east", "prod",
                                                                                 "http://127.0.0.1:1")
    assert store_for_region(settings, "eu-west").root == (tmp_path / "eu").resolve()
    assert "b" not in repr(settings.sync.regions["us-east"].secret_key)


@pytest.mark.parametrize("regions,message", [
    ({"US_East": {}}, "lowercase"),
    ({"us-east": {"kind": "s3", "access_key": "a"}}, "both access_key and secret_key"),
    ({"us-east": {"kind": "local", "bucket": "b"}}, "kind 's3' only"),
    ({"us-east": {"kind": "gcs"}}, "'local' or 's3'"),
])
def test_bad_region_settings_are_refused(tmp_path, regions, message):
    with pytest.raises(ValidationError, match=message):
        load_settings(home=tmp_path, sync={"regions": regions})


def test_bad_region_name_is_refused(tmp_path):
    with pytest.raises(ValueError, match="region name"):
        store_for_region(load_settings(home=tmp_path), "../etc")
