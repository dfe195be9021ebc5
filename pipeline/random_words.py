"""The random-word control: a neighbor version made without an LLM, in the style of WaffleCLIP.

WaffleCLIP (Roth et al., ICCV 2023) replaces LLM-written class descriptors by random ones: a few
random words, or random characters with the same word lengths, after the class name. Here each
class of a given version (`--like DATASET@REF`) gets as many neighbors as it has there,
alternating

    "<class>, which has <w1> <w2>"          random words from a shipped word list
    "<class>, which has <xkqv> <mtpwa>"     random lowercase letters, the same word lengths

with the same classes and visible classes (and split, when the version records one), kind
"random". It answers the first question a reviewer asks of SEPT: does the gain come from what
the neighbors mean? Seeded: the texts of a class depend only on (seed, class name, count).

Words: `wordlists/english.txt` (package data), derived offline from the bert-base-uncased vocabulary
(its header says how). The version goes through the same write and margins path as `sept generate`
(`sept.pipeline.run.write_result`); no LLM is contacted.
"""
from __future__ import annotations

import hashlib
import random
import string
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sept.neighbor_store.records import NeighborRecord

BACKEND = "random-words"
WORDLIST = Path(__file__).parent / "wordlists" / "english.txt"
STYLE = "<class>, which has <words>"


class RandomWordsConfig(BaseModel):
    """Parameters of a random-word version. `dataset` is taken from the `like` version."""

    model_config = ConfigDict(extra="forbid")

    like: str
    seed: int = 0
    words_per_text: int = Field(2, ge=1, le=8)       # WaffleCLIP's descriptors are two words
    clap_checkpoint: Path | None = None
    clap_amodel: str = "HTSAT-tiny"
    clap_fusion: bool = False
    clap_tokenizer: Path | None = None
    trust_checkpoint: bool = False                   # PipelineConfig's meaning: pickled .pt only when trusted
    templates: str = "default"
    tag: str | None = None
    store: Path | None = None
    message: str = ""
    dataset: str | None = None


def load_words(path: Path = WORDLIST) -> list[str]:
    """The word list: one word a line, # comments; refused when empty or when a word repeats."""
    words = [w.strip() for w in path.read_text(encoding="utf-8").splitlines()
             if w.strip() and not w.startswith("#")]
    if not words:
        raise ValueError(f"{path}: no words")
    seen = Counter(words)
    twice = [w for w, n in seen.items() if n > 1]
    if twice:
        raise ValueError(f"{path}: word {twice[0]!r} is listed {seen[twice[0]]} times")
    return words


def wordlist_ref(path: Path = WORDLIST) -> str:
    """<file stem>@<sha256 of its bytes, 12 hex>: the provenance a version records."""
    return f"{path.stem}@{hashlib.sha256(path.read_bytes()).hexdigest()[:12]}"


def random_texts(class_name: str, n: int, seed: int, words: list[str], per_text: int = 2) -> list[str]:
    """n distinct texts for `class_name`: even positions random words, odd ones random letters
    with the word lengths of the text before them. Depends only on (seed, class name, n, words)."""
    # str seeds are hashed with SHA-512 by random.Random: stable across processes and machines
    rng = random.Random(f"{seed}\x00{class_name}")
    texts: list[str] = []
    lengths = [4] * per_text
    tries = 0
    while len(texts) < n:
        tries += 1
        if tries > 100 * (n + 1):
            raise ValueError(f"class {class_name!r}: cannot draw {n} distinct random texts from {len(words)} words")
        if len(texts) % 2 == 0:
            drawn = rng.sample(words, per_text)
            lengths = [len(w) for w in drawn]
        else:
            drawn = ["".join(rng.choice(string.ascii_lowercase) for _ in range(k)) for k in lengths]
        text = f"{class_name}, which has {' '.join(drawn)}"
        if text not in texts:
            texts.append(text)
    return texts


def random_neighbors(classes: list[str], counts: dict[str, int], seed: int, words: list[str],
                     per_text: int = 2, words_ref: str = "") -> list[NeighborRecord]:
    """Kind "random" records, class order then rank, `counts[c]` for each class c."""
    out = []
    for c in classes:
        for rank, text in enumerate(random_texts(c, counts.get(c, 0), seed, words, per_text)):
            out.append(NeighborRecord(**{"class": c, "text": text, "kind": "random",
                                         "source": {"backend": BACKEND, "words": words_ref, "seed": seed,
                                                    "sample": rank}}))
    return out


def make_random_version(cfg: RandomWordsConfig, store):
    """The version `cfg.like`'s random-word twin as a `PipelineResult` (not written yet), and the
    config with its dataset filled in: write both with `sept.pipeline.run.write_result`."""
    from sept.pipeline.run import CLAP_SKIPPED, PipelineResult, load_clap
    from sept.prompts import load_templates

    like = store.read(cfg.like)
    classes = list(like.classes)
    counts = Counter(r.class_ for r in like.neighbors)
    words = load_words()
    ref = wordlist_ref()
    templates = load_templates(cfg.templates)
    neighbors = random_neighbors(classes, counts, cfg.seed, words, cfg.words_per_text, ref)
    like_params = like.manifest.get("params", {}) or {}
    params: dict[str, Any] = {
        "backend": BACKEND,
        "model": "none",
        "like": {"ref": like.ref, "id": like.id},
        "seed": cfg.seed,
        "words": ref,
        "words_per_text": cfg.words_per_text,
        "style": STYLE,
        "templates": templates.ref,
        # the same classes were visible as for the version it copies the shape of
        "visible_classes": list(like.manifest.get("visible_classes") or classes),
    }
    if like_params.get("split"):
        params["split"] = like_params["split"]
    backbone = load_clap(cfg)
    margins = None
    if backbone is None:
        params["clap"] = params["margins"] = CLAP_SKIPPED
    else:
        from sept.pipeline.margins import compute_margins

        params["clap"] = {"fingerprint": backbone.fingerprint, "checkpoint": Path(cfg.clap_checkpoint).name,
                          "amodel": cfg.clap_amodel, "enable_fusion": cfg.clap_fusion}
        params["margins"] = {"fingerprint": backbone.fingerprint, "templates": templates.ref}
        values = compute_margins(backbone, classes, neighbors, templates)
        margins = (backbone.fingerprint, values, [n.id for n in neighbors])
    stats = {"classes": {c: {"kept": counts.get(c, 0)} for c in classes}, "requests": 0, "cache_hits": 0}
    result = PipelineResult(classes=classes, neighbors=neighbors, rejected=[], params=params, margins=margins,
                            stats=stats)
    return result, cfg.model_copy(update={"dataset": like.dataset})
