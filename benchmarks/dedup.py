"""Dedup quality on the labelled pair sets and dedup speed, for the shipped MiniLM.

Quality: every pair of a labelled set goes through `dedup` as a two-candidate
class (text_a ranked first); a pair is merged when text_b is rejected as `duplicate_of`
text_a. Prints precision and recall of "merge" at the stage's defaults, per rule and per
kind of pair, every confusion pair, and the threshold ranges that would separate the set:
for phrase cosine alone (the rule before the key and substitution tests) and for each of
the stage's thresholds with the others at their defaults.

Speed: `dedup` over 50 classes x 30 candidates (paraphrase-rich, LLM-style phrasings), next
to the sentence-embedding call alone on the same texts.

The figures are for the shipped synonym lexicon (pipeline/lexicon/synonyms.txt), with the same
set measured without it on the next line; --no-synonyms measures without it throughout.

Four labelled sets are measured by default, each on its own, written apart from one another
with the same labelling rule: tests/data/dedup_pairs.tsv, dedup_pairs_heldout.tsv and
dedup_pairs_final.tsv, whose misses the rules and the lexicon were revised against in turn,
and dedup_pairs_blind.tsv, measured once the last revision was committed and never revised
against, which tells how far the rules generalize.

    python benchmarks/dedup.py [--pairs SET.tsv ...] [--classes 50] [--candidates 30] [--no-synonyms]

benchmarks/dedup_stemmers.py measures the same sets with lemmatizers in the stemmer's place.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]

import numpy as np  # noqa: E402

from sept.neighbor_store.records import NeighborRecord  # noqa: E402
from sept.pipeline.dedup import (  # noqa: E402
    DEFAULT_THRESHOLD,
    SYNONYMS,
    WORD_THRESHOLD,
    content_key,
    dedup,
    embed_texts,
    key_threshold_for,
    load_lexicon,
    lookalikes,
    spelling_key,
    substitution,
)
from sept.pipeline.models import get_sentence_model  # noqa: E402

FIELDS = ("label", "dataset", "class", "text_a", "text_b", "why")


def read_pairs(path: Path) -> list[dict[str, str]]:
    """Rows of the labelled set: '#' lines are its header comment, then a TSV with FIELDS."""
    lines = [(n, line) for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if line.strip() and not line.startswith("#")]
    header = lines[0][1].split("\t")
    if tuple(header) != FIELDS:
        raise ValueError(f"{path}:{lines[0][0]}: expected columns {','.join(FIELDS)}, got {','.join(header)}")
    rows = []
    for n, line in lines[1:]:
        cols = line.split("\t")
        if len(cols) != len(FIELDS) or cols[0] not in ("merge", "stay"):
            raise ValueError(f"{path}:{n}: expected {len(FIELDS)} tab-separated columns, label merge|stay")
        rows.append({**dict(zip(FIELDS, cols)), "line": n})
    return rows


def judge(rows, model, synonyms=SYNONYMS) -> list[dict]:
    """Each row with `merged` (the stage's verdict at its defaults) and `rule` (what matched).

    Every pair is the only two candidates of its own class, all in one call: the rules work
    within a class. The class is the dataset's class with the line number after it: the class's
    words select the lexicon's class-context groups as under the class itself, and the number
    keeps the class-name rule out ("sound of a vacuum cleaner" under "vacuum cleaner" is that
    rule's; this measures the pair rules)."""
    cands = {}
    for r in rows:
        cls = f"{r['class']} {r['line']}"
        cands[cls] = [NeighborRecord(**{"class": cls, "text": r["text_a"]}), NeighborRecord(**{"class": cls, "text": r["text_b"]})]
    res = dedup(cands, model, synonyms=synonyms)
    by_class = {rej.class_: rej for rej in res.rejected}
    out = []
    for r in rows:
        cls = f"{r['class']} {r['line']}"
        rej = by_class.get(cls)
        if rej is not None and rej.reason != f"duplicate_of:{cands[cls][0].id}":
            raise ValueError(f"line {r['line']}: {rej.text!r} rejected as {rej.reason!r}, not as a duplicate of the pair")
        out.append({**r, "merged": rej is not None, "rule": rej.source.get("dedup_rule") if rej else None,
                    "scores": rej.scores if rej else {}})
    return out


def figures(judged) -> tuple[float, float, int, int, int]:
    tp = sum(j["merged"] and j["label"] == "merge" for j in judged)
    fp = sum(j["merged"] and j["label"] == "stay" for j in judged)
    fn = sum(not j["merged"] and j["label"] == "merge" for j in judged)
    return tp / max(tp + fp, 1), tp / max(tp + fn, 1), tp, fp, fn


def features(rows, model, synonyms=SYNONYMS) -> list[dict]:
    """Per pair: phrase cosine, whether the content keys match (without or with the lexicon of
    the pair's class), and the substituted words' cosine."""
    lexicon = load_lexicon(synonyms)
    lexicons = [lexicon.for_class(r["class"]) if lexicon is not None else None for r in rows]
    emb_a = embed_texts(model, [r["text_a"] for r in rows])
    emb_b = embed_texts(model, [r["text_b"] for r in rows])
    subs = [substitution(r["text_a"], r["text_b"], lx) for r, lx in zip(rows, lexicons)]
    words = sorted({w for s in subs if s for w in s})
    wemb = dict(zip(words, embed_texts(model, words)))
    out = []
    for r, ea, eb, s, lexicon in zip(rows, emb_a, emb_b, subs, lexicons):
        key = any(bool(content_key(r["text_a"], lx)) and content_key(r["text_a"], lx) == content_key(r["text_b"], lx)
                  for lx in (None, lexicon)) or bool(spelling_key(r["text_a"])) and spelling_key(r["text_a"]) == spelling_key(r["text_b"])
        out.append({**r, "sim": float(ea @ eb), "key": key,
                    "word_sim": float(wemb[s[0]] @ wemb[s[1]]) if s and not key else None,
                    "lookalikes": bool(s) and lookalikes(*s)})
    return out


def decide(f, threshold, key_threshold, word_threshold) -> bool:
    if f["key"]:
        return f["sim"] >= key_threshold
    return (f["word_sim"] is not None and not f["lookalikes"] and f["sim"] >= threshold
            and f["word_sim"] >= word_threshold)


def scan(feats, name, grid, **fixed) -> str:
    """The interval of `name` over `grid` with no false merge, and the best recall in it."""
    n_merge = sum(f["label"] == "merge" for f in feats)
    ok = []
    for v in grid:
        p = {**fixed, name: v}
        fp = sum(decide(f, **p) and f["label"] == "stay" for f in feats)
        tp = sum(decide(f, **p) and f["label"] == "merge" for f in feats)
        if fp == 0:
            ok.append((v, tp / n_merge))
    if not ok:
        return f"{name}: no value in [{grid[0]:.3f}, {grid[-1]:.3f}] avoids every false merge"
    best = max(r for _, r in ok)
    at_best = [v for v, r in ok if r == best]
    return (f"{name}: no false merge for {min(v for v, _ in ok):.3f}..{max(v for v, _ in ok):.3f}; "
            f"best recall {best:.3f} for {min(at_best):.3f}..{max(at_best):.3f}")


def quality(path: Path, model, synonyms=SYNONYMS) -> None:
    rows = read_pairs(path)
    judged = judge(rows, model, synonyms)
    feats = features(rows, model, synonyms)
    key_t = key_threshold_for(DEFAULT_THRESHOLD)
    for j, f in zip(judged, feats):  # the scans below replay the stage's rules: they must agree with it
        if j["merged"] != decide(f, DEFAULT_THRESHOLD, key_t, WORD_THRESHOLD):
            raise AssertionError(f"line {j['line']}: replayed rules disagree with dedup()")
    p, r, tp, fp, fn = figures(judged)
    n_m = sum(j["label"] == "merge" for j in judged)
    print(f"labelled set: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: {len(judged)} pairs "
          f"({n_m} merge, {len(judged) - n_m} stay), {len({j['dataset'] for j in judged})} datasets")
    lexicon = load_lexicon(synonyms)
    lex = "none" if lexicon is None else f"{lexicon.path.name}, {len(lexicon.groups)} groups, sha256 {lexicon.sha256[:12]}"
    print(f"defaults: threshold {DEFAULT_THRESHOLD}, key_threshold {key_t:.3f}, word_threshold {WORD_THRESHOLD}; lexicon {lex}")
    print(f"precision {p:.3f}   recall {r:.3f}   (merged {tp} of {n_m} paraphrases; {fp} distinct pairs merged; {fn} missed)")
    if lexicon is not None:
        p0, r0, tp0, fp0, _ = figures(judge(rows, model, None))
        print(f"  without the lexicon: precision {p0:.3f}   recall {r0:.3f}   (merged {tp0}; {fp0} distinct pairs merged)")
    for rule in ("key", "synonym", "semantic"):
        print(f"  by rule {rule:9}: {sum(j['rule'] == rule and j['label'] == 'merge' for j in judged)} paraphrases, "
              f"{sum(j['rule'] == rule and j['label'] == 'stay' for j in judged)} distinct")
    kinds: dict[str, list[bool]] = {}
    for j in judged:
        if j["label"] == "merge":
            kind = "synonym" if "synonym" in j["why"] else "other"
            kinds.setdefault(kind, []).append(j["merged"])
    print("  recall by kind: " + ", ".join(f"{k} {sum(v)}/{len(v)} = {sum(v) / len(v):.3f}" for k, v in sorted(kinds.items())))

    print("\nconfusion pairs (label, phrase cosine, substituted-word cosine):")
    for j, f in zip(judged, feats):
        if j["merged"] != (j["label"] == "merge"):
            kind = "false merge" if j["merged"] else "missed"
            ws = f"{f['word_sim']:.3f}" if f["word_sim"] is not None else "  -  "
            print(f"  {kind:11} {j['label']:5} {f['sim']:.3f} {ws}  {j['class']}: {j['text_a']!r} / {j['text_b']!r} ({j['why']})")

    merges = [f["sim"] for f in feats if f["label"] == "merge"]
    stays = [f["sim"] for f in feats if f["label"] == "stay"]
    top_stay = max((f for f in feats if f["label"] == "stay"), key=lambda f: f["sim"])
    low_merge = min((f for f in feats if f["label"] == "merge"), key=lambda f: f["sim"])
    print("\nthreshold ranges that would separate the set:")
    if max(stays) < min(merges):
        print(f"  phrase cosine alone: ({max(stays):.3f}, {min(merges):.3f}]")
    else:
        print(f"  phrase cosine alone: none; distinct pairs reach {max(stays):.3f} ({top_stay['text_a']!r} / "
              f"{top_stay['text_b']!r}), paraphrases go down to {min(merges):.3f} ({low_merge['text_a']!r} / {low_merge['text_b']!r})")
        for t in (0.8, 0.85, 0.9, 0.95):
            tp_ = sum(s >= t for s in merges)
            fp_ = sum(s >= t for s in stays)
            print(f"    cosine >= {t:.2f} alone: precision {tp_ / max(tp_ + fp_, 1):.3f}, recall {tp_ / len(merges):.3f}")
    grid = [round(x, 3) for x in np.arange(0.30, 1.0001, 0.005)]
    fixed = {"threshold": DEFAULT_THRESHOLD, "key_threshold": key_t, "word_threshold": WORD_THRESHOLD}
    for name in ("key_threshold", "threshold", "word_threshold"):
        print("  " + scan(feats, name, grid, **{k: v for k, v in fixed.items() if k != name}))
    top_word = max((f for f in feats if f["label"] == "stay" and f["word_sim"] is not None and not f["lookalikes"]), key=lambda f: f["word_sim"])
    print(f"  closest substituted words of a distinct pair (lookalikes aside): {top_word['word_sim']:.3f} "
          f"({top_word['text_a']!r} / {top_word['text_b']!r})")


QUALITIES = ["loud", "distant", "soft", "muffled", "sharp", "faint", "echoing", "rhythmic", "metallic", "harsh"]
PATTERNS = ["{c}", "{q} {c}", "{c} {s}", "sound of {c}", "{c} noise", "{q} {c} noise", "recording of {c} {s}",
            "the {c} heard {s}", "{c}, {q}", "{q} {c} {s}"]
SETTINGS = ["indoors", "in the rain", "at night", "in a busy street", "in a small room", "far away", "in a park",
            "close to the microphone", "in a quiet house", "outside"]


def speed(n_classes: int, n_candidates: int, model, repeats: int = 3) -> None:
    from sept.pipeline.datasets import bundled_classes

    base = bundled_classes("esc50")
    names = [base[i % len(base)] + ("" if i < len(base) else f" {i // len(base)}") for i in range(n_classes)]
    cands = {}
    for ci, c in enumerate(names):
        texts = []
        for k in range(n_candidates):
            pat = PATTERNS[k % len(PATTERNS)]
            texts.append(pat.format(c=f"{c} event {k // len(PATTERNS)}", q=QUALITIES[(k + ci) % len(QUALITIES)],
                                    s=SETTINGS[(k * 3 + ci) % len(SETTINGS)]))
        cands[c] = [NeighborRecord(**{"class": c, "text": t}) for t in texts]
    texts = [r.text for rs in cands.values() for r in rs]
    dedup(cands, model)  # warm-up: tokenizer and torch kernels
    t_embed, t_dedup = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        embed_texts(model, names + texts)
        t_embed.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        res = dedup(cands, model)
        t_dedup.append(time.perf_counter() - t0)
    e, d = statistics.median(t_embed), statistics.median(t_dedup)
    kept = sum(len(v) for v in res.kept.values())
    print(f"\nspeed: {n_classes} classes x {n_candidates} candidates = {len(texts)} texts, median of {repeats}, CPU")
    print(f"  dedup (all passes, cross-class review included): {d:.3f} s   kept {kept}, rejected {len(res.rejected)}, "
          f"cross-class flags {len(res.info['cross_class'])}")
    print(f"  sentence embedding of the same texts alone:       {e:.3f} s   dedup / embedding = {d / e:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=Path, nargs="+",
                    default=[ROOT / "tests" / "data" / name
                             for name in ("dedup_pairs.tsv", "dedup_pairs_heldout.tsv", "dedup_pairs_final.tsv",
                                          "dedup_pairs_blind.tsv")],
                    help="labelled sets, each measured on its own (default: the four shipped sets)")
    ap.add_argument("--classes", type=int, default=50)
    ap.add_argument("--candidates", type=int, default=30)
    ap.add_argument("--no-synonyms", action="store_true", help="measure without the synonym lexicon")
    args = ap.parse_args()
    model = get_sentence_model(None)
    for n, path in enumerate(args.pairs):
        if n:
            print()
        quality(path.resolve(), model, None if args.no_synonyms else SYNONYMS)
    speed(args.classes, args.candidates, model)


if __name__ == "__main__":
    main()
