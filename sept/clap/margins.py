"""SEPT margins: how far each kept neighbor sits from each class in the CLAP text space.

m[i, k] = mean_t || e_t(class_i) - e_t(neighbor_k) ||_2, where e_t(x) is the
unit-normalized CLAP text embedding of template t filled with x. Every class against
every kept neighbor of every class, so the trainer can pull a class towards its own
neighbors (L_intra) and push it from the others' (L_inter).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch

from sept.neighbor_store.records import NeighborRecord

if TYPE_CHECKING:
    from sept.prompts import TemplateSet


def encode_templated(backbone, texts: Sequence[str], templates: "TemplateSet", batch_size: int = 256) -> torch.Tensor:
    """Unit-normalized embeddings of every text in every template: [N, T, D].

    All N*T strings go to the encoder in one call: `encode_text` encodes each distinct
    string once, in batches of one token length (no padding).
    """
    T = len(templates.templates)
    strings = [s for text in texts for s in templates.fill(text)]
    if not strings:
        return torch.zeros(0, T, getattr(backbone, "embed_dim", 512))
    emb = backbone.encode_text(strings, batch_size=batch_size).float()
    # encode_text already normalizes; renormalizing keeps the contract for any encoder
    return torch.nn.functional.normalize(emb.view(len(texts), T, -1), dim=-1)


def margins_from_embeddings(class_emb: torch.Tensor, neighbor_emb: torch.Tensor) -> torch.Tensor:
    """class_emb [C, T, D], neighbor_emb [K, T, D] -> margins [C, K]: mean over t of L2 distances."""
    if neighbor_emb.shape[0] == 0:
        return torch.zeros(class_emb.shape[0], 0)
    # exact distances, not the |a|^2+|b|^2-2ab shortcut: near-identical strings would
    # otherwise get distances of ~1e-3 from cancellation
    d = torch.cdist(
        class_emb.transpose(0, 1).contiguous(),
        neighbor_emb.transpose(0, 1).contiguous(),
        compute_mode="donot_use_mm_for_euclid_dist",
    )  # [T, C, K]
    return d.mean(dim=0)


@torch.no_grad()
def compute_margins(
    backbone,
    classes: list[str],
    neighbors: list[NeighborRecord],
    templates: "TemplateSet",
    batch_size: int = 256,
) -> torch.Tensor:
    """Margins [C, K] float32 for `classes` (rows, in order) and `neighbors` (columns, in
    the given order: for a version, all accepted neighbors in neighbors.jsonl order)."""
    # one encoder call for both sides: its length buckets then fill from all C + K texts
    emb = encode_templated(backbone, list(classes) + [n.text for n in neighbors], templates, batch_size)
    return margins_from_embeddings(emb[:len(classes)], emb[len(classes):]).float().contiguous()
