"""Fixtures: synthesized audio datasets in PALM's layout (numpy + soundfile, no downloads).

Each class has its own sound family (tone, coloured noise, chirp, clicks) with per-clip
variation; clips come at mixed sample rates, channel counts and formats (WAV, FLAC), so the
reader and the backbone's front end see what users' datasets hold.

    <root>/<name>/train.csv, test.csv                 path,classname (paths relative to <root>/<name>)
    <root>/<name>/csv_files/train_1.csv, test_1.csv   one fold
    <root>/<name>/audio/<class-slug>/<split>_<i>.<ext>

write_benchmark_root builds the 11 PALM/SEPT benchmark datasets (real names, class lists and
fold counts from sept/trainer/palm_benchmark.json) as tiny stand-ins of that layout.
"""
from __future__ import annotations

import csv
import json
import re
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

RATES = (16000, 22050, 44100, 48000)
FAMILIES = ("clicks", "pink", "tone", "chirp", "white", "brown", "am")
DEFAULT_CLASSES = ("Cough", "cafe/restaurant", "dog", "siren")


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "class"


def _coloured_noise(rng, n: int, exponent: float) -> np.ndarray:
    """1/f^exponent noise (0 white, 1 pink, 2 brown), unit peak."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n)
    f[0] = f[1]
    x = np.fft.irfft(spectrum / f ** (exponent / 2), n)
    return x / (np.abs(x).max() + 1e-9)


def synth_clip(family: str, class_index: int, rng, rate: int, seconds: float) -> np.ndarray:
    """[T] float32 in [-1, 1] of one sound family; class_index shifts its parameters."""
    n = int(rate * seconds)
    t = np.arange(n) / rate
    base = 220.0 * (1 + class_index % 5) * rng.uniform(0.95, 1.05)
    if family == "tone":
        x = np.sin(2 * np.pi * base * t) + 0.3 * np.sin(2 * np.pi * 2 * base * t)
    elif family == "chirp":
        f0, f1 = base, min(base * 8, rate / 2.5)
        x = np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t ** 2 / (2 * seconds)))
    elif family == "clicks":
        x = np.zeros(n)
        period = int(rate / rng.uniform(4, 9))
        for start in range(int(rng.integers(0, period)), n, period):
            length = min(int(0.01 * rate), n - start)
            x[start:start + length] = rng.standard_normal(length) * np.exp(-np.arange(length) / (0.002 * rate))
    elif family == "am":
        x = np.sin(2 * np.pi * base * t) * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 6) * t))
    else:
        x = _coloured_noise(rng, n, {"white": 0.0, "pink": 1.0, "brown": 2.0}[family])
    x = 0.6 * x / (np.abs(x).max() + 1e-9)
    return x.astype(np.float32)


def write_palm_dataset(root: str | Path, name: str = "Synth", classes=DEFAULT_CLASSES, n_train: int = 4,
                       n_test: int = 2, seconds: float = 1.0, seed: int = 0, long_clip: bool = True) -> Path:
    """Write a PALM-layout dataset and return its folder <root>/<name>.

    long_clip: make one test clip 11 s long (the cache's crop policy applies to it).
    """
    import soundfile

    rng = np.random.default_rng(seed)
    folder = Path(root) / name
    rows: dict[str, list[tuple[str, str]]] = {"train": [], "test": []}
    fold: dict[str, list[tuple[str, str]]] = {"train": [], "test": []}
    counter = 0
    for c, classname in enumerate(classes):
        family = FAMILIES[c % len(FAMILIES)]
        for split, count in (("train", n_train), ("test", n_test)):
            for i in range(count):
                rate = RATES[counter % len(RATES)]
                channels = 1 + counter % 2
                ext, subtype = (("flac", "PCM_16") if counter % 3 == 2 else ("wav", "PCM_16"))
                length = 11.0 if (long_clip and split == "test" and c == 0 and i == 0) else seconds * rng.uniform(0.8, 1.2)
                wave = synth_clip(family, c, rng, rate, length)
                if channels == 2:
                    wave = np.stack([wave, 0.8 * wave], axis=1)
                rel = f"audio/{_slug(classname)}/{split}_{i}.{ext}"
                (folder / rel).parent.mkdir(parents=True, exist_ok=True)
                soundfile.write(str(folder / rel), wave, rate, subtype=subtype)
                rows[split].append((rel, classname))
                if i < count - 1:   # fold 1: all but the last clip of each class
                    fold[split].append((rel, classname))
                counter += 1
    for split, items in rows.items():
        _write_csv(folder / f"{split}.csv", items)
        _write_csv(folder / "csv_files" / f"{split}_1.csv", fold[split])
    return folder


def _write_csv(path: Path, rows: list[tuple[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "classname"])
        writer.writerows(rows)


def benchmark_facts() -> dict[str, dict]:
    """{name: {"classes": [...], "folds": k}} of the 11 benchmark datasets (the packaged copy)."""
    return json.loads((resources.files("sept.trainer") / "palm_benchmark.json").read_text(encoding="utf-8"))


def write_benchmark_root(root: str | Path, names: list[str], clips_per_class: int = 2, folds: int | None = None,
                         seconds: float = 1.0) -> Path:
    """Write mini versions of the named benchmark datasets under `root`; return `root`.

    Each dataset gets its real class list and, per class, `clips_per_class` train and as many
    test clips (mono, 16 or 48 kHz, WAV/FLAC). folds: None = the dataset's real fold count.
    With k > 1 folds, csv_files/train_<j>.csv / test_<j>.csv (j = 1..k) swap the train and test
    halves on even folds, so folds differ; train.csv/test.csv (fold 1's lists) are written too.
    """
    import soundfile

    facts = benchmark_facts()
    unknown = [n for n in names if n not in facts]
    if unknown:
        raise KeyError(f"not benchmark datasets: {', '.join(unknown)} (known: {', '.join(facts)})")
    root = Path(root)
    for d, name in enumerate(names):
        rng = np.random.default_rng(1000 + d)
        folder = root / name
        k = facts[name]["folds"] if folds is None else folds
        halves: tuple[list, list] = ([], [])
        counter = 0
        for c, classname in enumerate(facts[name]["classes"]):
            family = FAMILIES[c % len(FAMILIES)]
            for j in range(2 * clips_per_class):
                rate = (16000, 48000)[counter % 2]
                ext = "flac" if counter % 3 == 2 else "wav"
                # an index prefix keeps slugs of different class names apart
                rel = f"audio/{c:02d}-{_slug(classname)}/clip_{j}.{ext}"
                (folder / rel).parent.mkdir(parents=True, exist_ok=True)
                wave = synth_clip(family, c, rng, rate, seconds * rng.uniform(0.9, 1.1))
                soundfile.write(str(folder / rel), wave, rate, subtype="PCM_16")
                halves[j % 2].append((rel, classname))
                counter += 1
        _write_csv(folder / "train.csv", halves[0])
        _write_csv(folder / "test.csv", halves[1])
        if k > 1:
            for j in range(1, k + 1):
                train, test = halves if j % 2 else halves[::-1]
                _write_csv(folder / "csv_files" / f"train_{j}.csv", train)
                _write_csv(folder / "csv_files" / f"test_{j}.csv", test)
    return root


@pytest.fixture(scope="session")
def palm_dataset(tmp_path_factory) -> Path:
    """4 classes ("Cough", "cafe/restaurant", "dog", "siren"), 4 train + 2 test clips each."""
    return write_palm_dataset(tmp_path_factory.mktemp("palm-data"))


@pytest.fixture(scope="session")
def palm_dataset_other(tmp_path_factory) -> Path:
    """A second small dataset (cross-dataset transfer target), classes partly shared."""
    return write_palm_dataset(tmp_path_factory.mktemp("palm-other"), name="Other",
                              classes=("dog", "rain", "siren"), n_train=2, n_test=2, seed=1, long_clip=False)
