"""Region object stores: one byte-level interface, a local-directory and an S3 implementation.

Everything the sync layer writes to a region (content-addressed blobs, signed manifests, the
signed desired-state document) goes through :class:`ObjectStore`. ``store_for_region`` picks
the implementation from settings. Importing this package does not import boto3.
"""

from registry.objectstore.base import ObjectStore, check_key
from registry.objectstore.factory import store_for_region, stores_for_regions
from registry.objectstore.local import LocalStore

__all__ = ["LocalStore", "ObjectStore", "S3Store", "check_key", "store_for_region", "stores_for_regions"]


def __getattr__(name: str):
    # S3Store is importable from here without making `import registry.objectstore` pay for boto3.
    if name == "S3Store":
        from registry.objectstore.s3 import S3Store

        return S3Store
    raise AttributeError(name)
