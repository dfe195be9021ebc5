"""CLAP filter: keep neighbors that CLAP places near their own class and not nearer another.

Text-text similarity through the manual templates: the prototype of a text x is
normalize(mean_t normalize(encode_text(template_t.format(x)))). For a neighbor of class c,
    clap_self       = cos(neighbor, class c)
    clap_best_other = max over classes c' != c of cos(neighbor, class c')
and the neighbor is rejected as
    clap_low_self           when clap_self < min_self,
    clap_confuser:<class>   when clap_best_other > clap_self + confuser_margin.
The classes compared are the keys of `kept`: the run's visible classes. A base-only run
(`sept generate --split base`) passes only base classes, so no new class shapes the filter.

Defaults are set for released LAION-CLAP checkpoints, whose templated text prototypes
sit at cosine ~0.5-0.9 for related phrases; `min_self=0.5` drops neighbors CLAP cannot
relate to their class at all. A random-weight model gives arbitrary similarities, so
tests pass thresholds explicitly.

Optional text-audio check: with a few clips per class, the audio prototype of a class
is the normalized mean of its clip embeddings; scores["clap_audio_self"] =
cos(neighbor, audio prototype of its class) (and "clap_audio_best_other"), and with
`min_audio_self` set, neighbors below it are rejected as `clap_audio_low`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import torch
import torch.nn.functional as F

from sept.neighbor_store.records import NeighborRecord
from sept.pipeline.verdicts import StageResult, keep, reject
from sept.pipeline.margins import encode_templated

if TYPE_CHECKING:
    from sept.prompts import TemplateSet

DEFAULT_MIN_SELF = 0.5
DEFAULT_CONFUSER_MARGIN = 0.0


def prototypes(backbone, texts: Sequence[str], templates: "TemplateSet", batch_size: int = 256) -> torch.Tensor:
    """Template-averaged, renormalized text embeddings [N, D]."""
    return F.normalize(encode_templated(backbone, texts, templates, batch_size).mean(dim=1), dim=-1)


def audio_prototypes(backbone, audio: dict[str, list], classes: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalized mean clip embedding per class [C, D] and a mask [C] of classes that have clips.

    audio: class -> clips, each a file path or a (waveform, sample_rate) pair.
    """
    flat, rates, owner = [], [], []
    for ci, cls in enumerate(classes):
        for clip in audio.get(cls, []) or []:
            wave, rate = clip if isinstance(clip, tuple) else (clip, None)
            flat.append(wave)
            rates.append(rate)
            owner.append(ci)
    dim = getattr(backbone, "embed_dim", 512)
    protos = torch.zeros(len(classes), dim)
    present = torch.zeros(len(classes), dtype=torch.bool)
    if flat:
        emb = backbone.encode_audio(flat, sample_rate=rates, crop="deterministic").float()
        owner_t = torch.tensor(owner)
        protos.index_add_(0, owner_t, emb)
        present[owner_t] = True
        protos = F.normalize(protos, dim=-1)
    return protos, present


@torch.no_grad()
def clap_filter(
    kept: dict[str, list[NeighborRecord]],
    backbone,
    templates: "TemplateSet",
    min_self: float = DEFAULT_MIN_SELF,
    confuser_margin: float = DEFAULT_CONFUSER_MARGIN,
    audio: dict[str, list] | None = None,
    min_audio_self: float | None = None,
    batch_size: int = 256,
) -> StageResult:
    """Score and filter neighbors with the CLAP text encoder.

    kept: class -> neighbors (the dict order is the class order; every class, maybe empty).
    audio: optional class -> a few clips (file paths or (waveform, rate) pairs) for the text-audio check.
    """
    classes = list(kept)
    flat = [r for cls in classes for r in kept[cls]]
    owner = torch.tensor([ci for ci, cls in enumerate(classes) for _ in kept[cls]], dtype=torch.long)
    out: dict[str, list[NeighborRecord]] = {cls: [] for cls in classes}
    rejected: list[NeighborRecord] = []
    info: dict[str, Any] = {"min_self": min_self, "confuser_margin": confuser_margin, "min_audio_self": min_audio_self}
    if not flat:
        return StageResult(kept=out, rejected=rejected, info=info)

    class_proto = prototypes(backbone, classes, templates, batch_size)  # [C, D]
    neighbor_proto = prototypes(backbone, [r.text for r in flat], templates, batch_size)  # [K, D]
    sims = neighbor_proto @ class_proto.T  # [K, C]
    self_sim = sims.gather(1, owner[:, None]).squeeze(1)
    others = sims.clone()
    others.scatter_(1, owner[:, None], float("-inf"))
    best_other, best_idx = others.max(dim=1) if len(classes) > 1 else (None, None)

    audio_sims = None
    if audio:
        audio_proto, present = audio_prototypes(backbone, audio, classes)
        audio_sims = neighbor_proto @ audio_proto.T  # [K, C]
        audio_sims[:, ~present] = float("nan")
        info["audio_clips"] = {cls: len(audio.get(cls, []) or []) for cls in classes}

    for k, r in enumerate(flat):
        scores = {"clap_self": float(self_sim[k])}
        if best_other is not None:
            scores["clap_best_other"] = float(best_other[k])
        if audio_sims is not None:
            a_self = float(audio_sims[k, owner[k]])
            if a_self == a_self:  # NaN when the class has no clip
                scores["clap_audio_self"] = a_self
            a_other = audio_sims[k].clone()
            a_other[owner[k]] = float("nan")
            a_other = a_other[~torch.isnan(a_other)]
            if a_other.numel():
                scores["clap_audio_best_other"] = float(a_other.max())

        if scores["clap_self"] < min_self:
            rejected.append(reject(r, "clap_low_self", **scores))
        elif best_other is not None and scores["clap_best_other"] > scores["clap_self"] + confuser_margin:
            rejected.append(reject(r, f"clap_confuser:{classes[int(best_idx[k])]}", **scores))
        elif (
            min_audio_self is not None
            and "clap_audio_self" in scores
            and scores["clap_audio_self"] < min_audio_self
        ):
            rejected.append(reject(r, "clap_audio_low", **scores))
        else:
            out[classes[int(owner[k])]].append(keep(r, **scores))

    info["counts"] = {cls: {"in": len(kept[cls]), "kept": len(out[cls])} for cls in classes}
    return StageResult(kept=out, rejected=rejected, info=info)
