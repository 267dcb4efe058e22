"""The storage kinds a gokart cache can live on, chosen by the path's scheme in one place.

Remote kinds are imported on first use, so a local-only pipeline never pays for
importing boto3 or gcsfs.
"""

from __future__ import annotations

import functools
import importlib

from locked_targets.storage.base import StorageKind
from locked_targets.storage.local import LocalStorage

# scheme -> (module, class) of its storage kind
_REMOTE_KINDS = {
    "s3://": ("locked_targets.storage.s3", "S3Storage"),
    "gs://": ("locked_targets.storage.gcs", "GcsStorage"),
}
_LOCAL = LocalStorage()


def storage_kind_for(path: str) -> StorageKind:
    """The storage kind that holds ``path``: S3 for ``s3://``, GCS for ``gs://``, else local."""
    for scheme in _REMOTE_KINDS:
        if path.startswith(scheme):
            return _remote_kind(scheme)
    return _LOCAL


@functools.cache
def _remote_kind(scheme: str) -> StorageKind:
    module_name, class_name = _REMOTE_KINDS[scheme]
    kind: StorageKind = getattr(importlib.import_module(module_name), class_name)()
    return kind


__all__ = ["StorageKind", "storage_kind_for"]
