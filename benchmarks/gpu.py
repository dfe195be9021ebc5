"""The trainer on a CUDA device: one CoOp+SEPT epoch, text-encoder throughput in bf16 and fp32,
peak GPU memory.

Random-weight LAION-CLAP (sept.clap.tiny: HTSAT-tiny + RoBERTa, the real classes), ESC-50's 50
class names, synthesized clips, 16 shots per class and 10 neighbors per class in a neighbor store.
The epoch is the trainer's own `train` (audio cache filled on the device, learner, margins
computed and attached, SEPT loss, `run_epoch`, checkpoint, evaluation), once with precision=fp32
and once with precision=bf16 (autocast of the step). The text encoder is timed through the CoOp
learner's prompt path (the per-step cost of training), forward and forward+backward, in both
precisions; the bf16-vs-fp32 gap is the largest |difference| of the unit-norm embeddings.

    python benchmarks/gpu.py [--classes 50] [--shots 16] [--neighbors 10] [--repeats 5]
    python benchmarks/gpu.py --device cpu --tiny      # the same code on the CPU, small sizes

Without a CUDA device (and no --device cpu) it says so and exits 0, so `make bench` goes on.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))          # fixtures_audio: the synthesized PALM-layout clips

import torch  # noqa: E402

NEIGHBOR_FORMS = ("{} up close", "distant {}", "loud {} noise", "{} in a small room", "muffled {}",
                  "recording of {} outdoors", "soft {}", "{} echoing in a hall", "short burst of {}",
                  "continuous {} for a while")
TINY = {"classes": 4, "shots": 2, "neighbors": 2, "repeats": 1}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu for a smoke run")
    ap.add_argument("--tiny", action="store_true", help=f"small sizes for a quick check: {TINY}")
    ap.add_argument("--classes", type=int, default=50)
    ap.add_argument("--shots", type=int, default=16)
    ap.add_argument("--neighbors", type=int, default=10, help="neighbors per class")
    ap.add_argument("--repeats", type=int, default=5, help="timed text-encoder passes per precision")
    ap.add_argument("--workdir", default=str(ROOT / ".sept" / "bench-gpu"))
    args = ap.parse_args(argv)
    if args.tiny:
        for k, v in TINY.items():
            setattr(args, k, v)
    return args


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory(device: torch.device) -> int | None:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def write_workload(work: Path, n_classes: int, shots: int, n_neighbors: int) -> tuple[Path, Path, str]:
    """A PALM-layout dataset (n_classes x shots train clips, 1 test clip per class) and a store
    version with n_neighbors neighbors per class: (dataset folder, store root, version ref)."""
    from fixtures_audio import write_palm_dataset
    from sept.neighbor_store import NeighborRecord, Store
    from sept.pipeline.datasets import bundled_classes

    if not 1 <= n_neighbors <= len(NEIGHBOR_FORMS):
        raise SystemExit(f"--neighbors must be 1..{len(NEIGHBOR_FORMS)}, got {n_neighbors}")
    esc50 = bundled_classes("esc50")
    classes = [esc50[i % 50] + ("" if i < 50 else f" {i // 50}") for i in range(n_classes)]
    data = work / f"data-{n_classes}x{shots}"
    name = f"Bench{n_classes}"
    if not (data / name / "train.csv").is_file():
        write_palm_dataset(data, name=name, classes=classes, n_train=shots, n_test=1, seconds=1.0, long_clip=False)
    store = Store(work / "store")
    records = [NeighborRecord(**{"class": c, "text": f.format(c)}) for c in classes
               for f in NEIGHBOR_FORMS[:n_neighbors]]
    ref = store.write_version(name, sorted(classes), records, params={"bench": "gpu"})
    return data / name, store.root, ref


def epoch_figures(backbone, checkpoint: Path, dataset: Path, store: Path, ref: str, shots: int, precision: str,
                  work: Path, device: torch.device) -> dict[str, Any]:
    """One CoOp+SEPT epoch through the trainer's `train`; its epoch time, run time and peak memory."""
    from sept.trainer.config import make_config
    from sept.trainer.train import train

    out_dir = work / "runs"
    run_name = f"coop-sept-{precision}"
    shutil.rmtree(out_dir / run_name, ignore_errors=True)
    cfg = make_config(overrides=dict(
        dataset_root=str(dataset), checkpoint=str(checkpoint), method="coop", shots=shots, epochs=1,
        neighbors=ref, store=str(store), cache_dir=str(work / "cache"), out_dir=str(out_dir), run_name=run_name,
        device=str(device), precision=precision))
    reset_peak(device)
    synchronize(device)
    t0 = time.perf_counter()
    results = train(cfg, backbone=backbone)
    synchronize(device)
    epoch = results["history"][0]
    return {"epoch_s": epoch["seconds"], "run_s": time.perf_counter() - t0, "steps": results["dataset"]["n_train"],
            "loss": epoch["loss"], "margins": results["neighbors"]["margins"], "K": results["neighbors"]["K"],
            "cache": results["cache"], "peak_bytes": peak_memory(device)}


def text_encoder_figures(learner, texts: list[str], owners: torch.Tensor, repeats: int,
                         contexts: dict[str, Callable[[], AbstractContextManager]],
                         device: torch.device) -> dict[str, Any]:
    """prompts/s of the learner's text path per precision, forward (no grad) and forward+backward
    (a training step's text work), the largest |bf16 - fp32| embedding difference, peak memory."""
    out: dict[str, Any] = {"prompts": len(texts)}
    embeddings = {}
    reset_peak(device)
    for precision, context in contexts.items():
        with torch.no_grad(), context():                       # warm-up, and the embeddings compared
            embeddings[precision] = learner(texts, owners).float()
        synchronize(device)
        t0 = time.perf_counter()
        for _ in range(repeats):
            with torch.no_grad(), context():
                learner(texts, owners)
        synchronize(device)
        forward = time.perf_counter() - t0
        with context():
            z = learner(texts, owners)
        z.float().sum().backward()                              # warm-up of the backward kernels
        synchronize(device)
        t0 = time.perf_counter()
        for _ in range(repeats):
            with context():
                z = learner(texts, owners)
            z.float().sum().backward()
        synchronize(device)
        both = time.perf_counter() - t0
        learner.zero_grad(set_to_none=True)
        out[precision] = {"forward_per_s": repeats * len(texts) / forward,
                          "train_per_s": repeats * len(texts) / both}
    if len(embeddings) == 2:
        a, b = embeddings.values()
        out["max_abs_diff"] = float((a - b).abs().max())
    out["peak_bytes"] = peak_memory(device)
    return out


def measure(backbone, checkpoint: Path, work: Path, n_classes: int, shots: int, n_neighbors: int, repeats: int,
            contexts: dict[str, Callable[[], AbstractContextManager]] | None = None) -> dict[str, Any]:
    """Every figure of this benchmark for a loaded backbone (its device is the device measured)."""
    from sept.neighbor_store import Store
    from sept.trainer.config import make_config
    from sept.trainer.learners import build_learner
    from sept.trainer.train import autocast_context

    device = backbone.device
    dataset, store, ref = write_workload(work, n_classes, shots, n_neighbors)
    figures: dict[str, Any] = {"device": str(device), "classes": n_classes, "shots": shots,
                               "neighbors_per_class": n_neighbors}
    figures["epoch"] = {p: epoch_figures(backbone, checkpoint, dataset, store, ref, shots, p, work, device)
                        for p in ("fp32", "bf16")}
    version = Store(store).read(ref)
    texts = version.classes + [r.text for r in version.neighbors]
    cfg = make_config(overrides=dict(method="coop", device=str(device)))
    torch.manual_seed(0)
    learner = build_learner("coop", backbone, version.classes, cfg).to(device)
    owners = torch.cat([torch.arange(len(version.classes)), learner.class_owners([r.class_ for r in version.neighbors])])
    if contexts is None:
        contexts = {p: (lambda p=p: autocast_context(device, p)) for p in ("fp32", "bf16")}
    figures["text_encoder"] = text_encoder_figures(learner, texts, owners, repeats, contexts, device)
    return figures


def report(f: dict[str, Any]) -> None:
    def mib(n):
        return "n/a (not CUDA)" if n is None else f"{n / 2 ** 20:.0f} MiB"

    print(f"device {f['device']}: {f['classes']} classes x {f['shots']} shots, {f['neighbors_per_class']} "
          f"neighbors/class, CoOp + SEPT, batch 16")
    for precision, e in f["epoch"].items():
        print(f"  epoch ({precision:4}): {e['epoch_s']:7.2f} s for {e['steps']} clips; whole run {e['run_s']:6.1f} s "
              f"(audio cache {e['cache']['misses']} encoded, {e['cache']['hits']} read; margins {e['margins']}); "
              f"peak memory {mib(e['peak_bytes'])}")
    if not f["device"].startswith("cuda"):
        print("  (off CUDA the trainer runs a bf16 config in fp32: the two epochs are the same computation)")
    t = f["text_encoder"]
    for precision in ("fp32", "bf16"):
        r = t[precision]
        print(f"  text encoder ({precision:4}), {t['prompts']} prompts: {r['forward_per_s']:8.0f} prompts/s forward, "
              f"{r['train_per_s']:8.0f} prompts/s forward+backward")
    print(f"  bf16 vs fp32: speed-up {t['bf16']['train_per_s'] / t['fp32']['train_per_s']:.2f}x forward+backward, "
          f"max |embedding difference| {t['max_abs_diff']:.2e}; peak memory {mib(t['peak_bytes'])}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("benchmarks/gpu.py: no CUDA device here (torch.cuda.is_available() is False); nothing measured. "
              "Run it on a machine with a GPU, or `--device cpu --tiny` for a smoke run of the same code.")
        return 0
    from sept.clap import load_backbone
    from sept.clap.tiny import write_random_checkpoint, write_tokenizer

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    tokenizer = work / "tokenizer"
    if not (tokenizer / "merges.txt").is_file():
        write_tokenizer(tokenizer)
    checkpoint = work / "clap-random.pt"
    if not checkpoint.is_file():
        write_random_checkpoint(checkpoint, seed=0)
    t0 = time.perf_counter()
    backbone = load_backbone(checkpoint, tokenizer=tokenizer, device=str(device))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"random-weight HTSAT-tiny CLAP on {name}, loaded in {time.perf_counter() - t0:.1f} s; torch {torch.__version__}")
    report(measure(backbone, checkpoint, work, args.classes, args.shots, args.neighbors, args.repeats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
