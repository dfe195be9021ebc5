"""The neighbor store: immutable, content-addressed versions of semantic neighbors per dataset.

    store = Store()                                  # $SEPT_STORE or ./neighbor-store
    ref = store.write_version("esc50", classes, neighbors, rejected, params=...)   # "esc50@1a2b3c4d5e6f"
    v = store.read(ref); v.by_class()                # accepted neighbors per class, in class order
    store.attach_margins(ref, fingerprint, m, v.neighbor_ids)   # m: [C, K]
"""
from sept.neighbor_store.errors import IntegrityError, RefError, StoreError, ValidationError
from sept.neighbor_store.records import KINDS, NeighborRecord, neighbor_id, normalize_text
from sept.neighbor_store.store import Store, split_ref
from sept.neighbor_store.version import Margins, Version

__all__ = [
    "KINDS",
    "IntegrityError",
    "Margins",
    "NeighborRecord",
    "RefError",
    "Store",
    "StoreError",
    "ValidationError",
    "Version",
    "neighbor_id",
    "normalize_text",
    "split_ref",
]
