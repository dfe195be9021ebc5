"""The neighbor store: immutable, content-addressed versions of semantic neighbors per dataset."""
from neighbor_store.records import NeighborRecord, neighbor_id, normalize_text

__all__ = ["NeighborRecord", "neighbor_id", "normalize_text"]
