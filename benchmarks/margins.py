"""Margins for 50 classes x 10 neighbors x 8 templates: sept's encode_text path vs laion-clap's
`CLAP_Module.get_text_embedding`, on the same strings and the same (random) weights.

Both paths compute m[i, k] = mean_t || e_t(class_i) - e_t(neighbor_k) ||_2 from unit-normalized
embeddings; they differ in how text is encoded: laion-clap pads every prompt to 77 tokens,
`ClapBackbone.encode_text` encodes each distinct prompt once, in batches of one token length
(no padding at all). Prints both wall and CPU times, their ratios (goal >= 5x wall) and the
largest absolute difference between the two margin matrices (goal <= 1e-6).

    python benchmarks/margins.py [--classes 50] [--neighbors 10] [--batch-size 256]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from sept.neighbor_store.records import NeighborRecord  # noqa: E402
from sept.pipeline.margins import compute_margins, margins_from_embeddings  # noqa: E402
from sept.prompts import load_templates  # noqa: E402

WALL_GOAL = 5.0      # laion-clap's wall time over ours
AGREEMENT = 1e-6     # largest |margin difference| between the two paths
QUALITIES = ["distant", "loud", "muffled", "sharp", "faint", "echoing", "rhythmic", "soft", "metallic", "harsh"]
SETTINGS = ["indoors", "in the rain", "at night", "in a busy street", "in a small room", "far away",
            "in a park", "close to the microphone", "in a quiet house", "outside"]
# phrasings in the style of LLM neighbor lists: two to seven words
PATTERNS = ["{q} {c}", "{c} {s}", "{q} {c} {s}", "sound of {c}", "{c} noise", "{q} {c} noise",
            "{c} heard {s}", "recording of {c} {s}", "{c} sound effect", "{q} {c} in the distance"]


def make_dataset(n_classes: int, n_neighbors: int) -> tuple[list[str], list[NeighborRecord]]:
    """ESC-50's class names (the bundled list, repeated with a suffix beyond 50) and neighbor
    phrases of realistic length, all distinct."""
    from sept.pipeline.datasets import bundled_classes

    esc50 = bundled_classes("esc50")
    classes = [esc50[i % 50] + ("" if i < 50 else f" {i // 50}") for i in range(n_classes)]
    neighbors = []
    for i, cls in enumerate(classes):
        for j in range(n_neighbors):
            text = PATTERNS[j % 10].format(q=QUALITIES[(i + j) % 10], s=SETTINGS[(i + 3 * j) % 10], c=cls)
            neighbors.append(NeighborRecord(**{"class": cls, "text": text + ("" if j < 10 else f" {j // 10}")}))
    return classes, neighbors


def laion_clap_module(backbone):
    """laion-clap's own `CLAP_Module` around the backbone's weights and tokenizer.

    `CLAP_Module.__init__` would build a second 158M-parameter model and fetch the tokenizer
    from the hub; the object below runs the unchanged `get_text_embedding` of the library on the
    very same weights.
    """
    from sept.clap import import_laion_clap

    laion_clap = import_laion_clap()
    module = laion_clap.CLAP_Module.__new__(laion_clap.CLAP_Module)
    torch.nn.Module.__init__(module)
    module.enable_fusion = backbone.enable_fusion
    module.model = backbone.model
    module.model_cfg = backbone.model_cfg
    module.tokenize = backbone.tokenizer
    return module


@torch.no_grad()
def laion_margins(module, classes, neighbors, templates, batch_size: int) -> torch.Tensor:
    """The straightforward path: every filled template through get_text_embedding (77 tokens)."""
    def embed(texts: list[str]) -> torch.Tensor:
        strings = [s for text in texts for s in templates.fill(text)]
        chunks = [module.get_text_embedding(strings[i:i + batch_size], use_tensor=True)
                  for i in range(0, len(strings), batch_size)]
        return torch.cat(chunks).view(len(texts), len(templates.templates), -1)

    return margins_from_embeddings(embed(classes), embed([n.text for n in neighbors]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=50)
    parser.add_argument("--neighbors", type=int, default=10)
    parser.add_argument("--templates", default="default")
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()

    from sept.clap import load_backbone
    from sept.clap.tiny import write_random_checkpoint, write_tokenizer

    templates = load_templates(args.templates)
    classes, neighbors = make_dataset(args.classes, args.neighbors)
    T = len(templates.templates)
    n_strings = (len(classes) + len(neighbors)) * T
    print(f"margins benchmark: {len(classes)} classes x {args.neighbors} neighbors x {T} templates "
          f"= {n_strings} prompts, torch threads {torch.get_num_threads()}")

    with tempfile.TemporaryDirectory(prefix="sept-bench-") as tmp:
        t0 = time.perf_counter()
        tokenizer = write_tokenizer(Path(tmp) / "tokenizer")
        checkpoint = write_random_checkpoint(Path(tmp) / "clap-random.pt", seed=0)
        backbone = load_backbone(checkpoint, tokenizer=tokenizer)
        print(f"random-weight HTSAT-tiny CLAP ready in {time.perf_counter() - t0:.1f} s")
        module = laion_clap_module(backbone)
        prompts = [p for text in classes + [n.text for n in neighbors] for p in templates.fill(text)]
        lengths = backbone.tokenize(prompts)["attention_mask"].sum(1).tolist()
        print(f"prompt length in tokens: mean {sum(lengths) / len(lengths):.1f}, max {max(lengths)} (laion-clap pads to 77)")

        # one short warm-up each so neither side pays first-call costs in the timing
        compute_margins(backbone, classes[:2], neighbors[:2], templates)
        laion_margins(module, classes[:2], neighbors[:2], templates, args.batch_size)

        t0, c0 = time.perf_counter(), time.process_time()
        ours = compute_margins(backbone, classes, neighbors, templates, batch_size=args.batch_size)
        t_ours, c_ours = time.perf_counter() - t0, time.process_time() - c0
        t0, c0 = time.perf_counter(), time.process_time()
        theirs = laion_margins(module, classes, neighbors, templates, args.batch_size)
        t_theirs, c_theirs = time.perf_counter() - t0, time.process_time() - c0

    diff = float((ours - theirs).abs().max())
    ratio = t_theirs / t_ours
    print(f"sept compute_margins (encode_text, length buckets): {t_ours:8.2f} s wall, {c_ours:8.2f} s CPU")
    print(f"laion-clap get_text_embedding (pad to 77)          : {t_theirs:8.2f} s wall, {c_theirs:8.2f} s CPU")
    print(f"speed-up: {ratio:.2f}x wall, {c_theirs / c_ours:.2f}x CPU (goal >= {WALL_GOAL:g}x wall)  "
          f"{'OK' if ratio >= WALL_GOAL else 'BELOW GOAL'}")
    print(f"margins [C, K] = {list(ours.shape)}, max |difference| = {diff:.2e} (goal <= {AGREEMENT:g})  "
          f"{'OK' if diff <= AGREEMENT else 'ABOVE GOAL'}")


if __name__ == "__main__":
    main()
