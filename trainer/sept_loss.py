"""SEPT: semantically expanded prompt tuning, as a loss term on top of any learner.

    L = L_ce + lambda * (L_intra + L_inter)
    L_intra = mean over (class i, own neighbor k)   of relu(||z_i - p_k|| - m[i, k])
    L_inter = mean over (class i, other neighbor k) of relu(m[i, k] - ||z_i - p_k||)

z_i: unit-norm embedding of class i through the learner; p_k: of neighbor k through the *same*
learner (its prompt, its class's context); m [C, K]: margins from the store (template
distances). A class stays within its own neighbors' margins and keeps the other classes'
neighbors at least their margin away.

Per step only a budget of neighbor prompts is encoded (the text encoder is the cost), but every
class's terms use the distances between *all* class embeddings and the sampled neighbors
[C, S], so L_inter is never dropped; `NeighborSampler` makes each epoch visit every neighbor.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

NEIGHBOR_STREAM = 0x5E97_0002


@dataclass
class NeighborSet:
    """Neighbors of the learner's classes: texts [K], owners [K] (class index), margins [C, K]."""

    texts: list[str]
    owners: torch.Tensor
    margins: torch.Tensor
    ids: list[str]

    def __len__(self) -> int:
        return len(self.texts)

    def take(self, idx: torch.Tensor) -> tuple[list[str], torch.Tensor, torch.Tensor]:
        """texts [S], owners [S], margins [C, S] of the neighbors at `idx`."""
        rows = idx.tolist()
        return [self.texts[i] for i in rows], self.owners[idx], self.margins[:, idx]


def distances(z: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """z [C, D], p [S, D] -> exact L2 distances [C, S] (differentiable, also at zero distance)."""
    diff = z.float().unsqueeze(1) - p.float().unsqueeze(0)
    return diff.pow(2).sum(-1).clamp_min(1e-12).sqrt()


def sept_terms(z: torch.Tensor, p: torch.Tensor, owners: torch.Tensor, margins: torch.Tensor,
               zero_margins: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_intra, L_inter) for classes z [C, D] and neighbors p [S, D] owned by owners [S].

    margins [C, S]; zero_margins replaces them by 0 (the ablation: pull to own neighbors, no push).
    A term with no (class, neighbor) pair of its kind is 0.
    """
    d = distances(z, p)
    m = torch.zeros_like(d) if zero_margins else margins.to(d.device, d.dtype)
    own = owners.to(d.device).unsqueeze(0) == torch.arange(z.shape[0], device=d.device).unsqueeze(1)
    intra = F.relu(d - m)[own]
    inter = F.relu(m - d)[~own]
    zero = d.sum() * 0
    return (intra.mean() if intra.numel() else zero), (inter.mean() if inter.numel() else zero)


class SeptLoss:
    """lambda * (L_intra + L_inter), with the ablation switches intra-only, inter-only, zero margins."""

    def __init__(self, weight: float = 1.0, intra: bool = True, inter: bool = True, zero_margins: bool = False):
        if not (intra or inter):
            raise ValueError("SEPT needs at least one of intra and inter")
        self.weight, self.intra, self.inter, self.zero_margins = weight, intra, inter, zero_margins

    def __call__(self, z, p, owners, margins) -> tuple[torch.Tensor, dict[str, float]]:
        l_intra, l_inter = sept_terms(z, p, owners, margins, self.zero_margins)
        total = (l_intra if self.intra else 0 * l_intra) + (l_inter if self.inter else 0 * l_inter)
        return self.weight * total, {"intra": l_intra.item(), "inter": l_inter.item()}


class NeighborSampler:
    """Per-step neighbor subsets such that an epoch visits every neighbor.

    Each epoch: shuffle each class's neighbors and the class order, interleave round-robin
    across classes (so a step's subset spans many classes), then cut consecutive windows of
    `size` = max(budget, ceil(K / steps)) (at most K), wrapping around. Depends only on
    (seed, epoch): a resumed run draws the same subsets.
    """

    def __init__(self, owners: torch.Tensor, budget: int, seed: int):
        self.owners = owners.tolist()
        self.budget = budget
        self.seed = seed

    def size(self, steps: int) -> int:
        K = len(self.owners)
        return min(K, max(self.budget, math.ceil(K / max(steps, 1))))

    def epoch(self, epoch: int, steps: int) -> list[torch.Tensor]:
        K = len(self.owners)
        rng = np.random.Generator(np.random.PCG64([NEIGHBOR_STREAM, self.seed, epoch]))
        by_class: dict[int, list[int]] = {}
        for k, c in enumerate(self.owners):
            by_class.setdefault(c, []).append(k)
        queues = [list(rng.permutation(by_class[c])) for c in rng.permutation(sorted(by_class))]
        order = [q[r] for r in range(max(map(len, queues), default=0)) for q in queues if r < len(q)]
        size = self.size(steps)
        return [torch.tensor([order[(s * size + j) % K] for j in range(size)], dtype=torch.long)
                for s in range(steps)]
