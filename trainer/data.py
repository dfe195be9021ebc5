"""Datasets in PALM's layout: class lists, few-shot sampling, base-to-new splits.

    <root>/<Dataset>/train.csv, test.csv             columns path,classname
    <root>/<Dataset>/csv_files/train_<k>.csv, test_<k>.csv   folds (--fold k)

Paths in the CSVs are relative to the dataset folder. Classes are `sorted(unique(classname))`
of the training CSV, kept verbatim ("cafe/restaurant", "Cough"). Audio is decoded by the
backbone (soundfile, else librosa): any format, rate and channel count.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sept.errors import SeptError

# Few-shot draws use their own generator so the subset depends on (seed, data) only, not on
# anything else the process has drawn, and PCG64 streams are the same on every platform.
FEW_SHOT_STREAM = 0x5E97


class DataError(SeptError, ValueError):
    """The dataset cannot be used as given; the message names the file, line or class."""


@dataclass(frozen=True)
class Sample:
    path: Path          # absolute
    label: int          # index into the dataset's class list
    classname: str


@dataclass
class AudioDataset:
    """One dataset: its name, ordered classes, and train/test samples labelled in that order."""

    name: str
    root: Path
    classes: list[str]
    train: list[Sample]
    test: list[Sample]
    fold: int | None = None
    sources: dict[str, str] = field(default_factory=dict)    # split -> csv path


def read_csv(path: str | Path, base_dir: str | Path) -> list[tuple[Path, str, int]]:
    """Rows of a path,classname CSV -> [(absolute path, classname, line number)]."""
    path, base_dir = Path(path), Path(base_dir)
    if not path.is_file():
        raise DataError(f"CSV file not found: {path}")
    rows: list[tuple[Path, str, int]] = []
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in ("path", "classname") if c not in columns]
        if missing:
            raise DataError(f"{path}: line 1: missing column(s) {', '.join(missing)} "
                            f"(header is {', '.join(columns) or 'empty'}; expected path,classname)")
        reader.fieldnames = columns
        for row in reader:
            line = reader.line_num
            rel, classname = (row.get("path") or "").strip(), row.get("classname")
            if not rel:
                raise DataError(f"{path}: line {line}: empty path")
            if classname is None or not classname.strip():
                raise DataError(f"{path}: line {line}: empty classname")
            audio = Path(rel)
            rows.append((audio if audio.is_absolute() else base_dir / audio, classname.strip(), line))
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


def check_audio_files(paths: list[Path], shown: int = 5) -> None:
    """Raise one DataError listing every missing or unreadable audio file (first `shown`, then a count)."""
    bad = bad_audio_files(paths)
    if bad:
        more = f"\n  ... and {len(bad) - shown} more" if len(bad) > shown else ""
        raise DataError(f"{len(bad)} audio file(s) missing or unreadable:\n  " + "\n  ".join(bad[:shown]) + more)


def bad_audio_files(paths: list[Path]) -> list[str]:
    """"<path> (missing | no audio frames | unreadable: <error>)" for each bad file, in order.

    Reads each file's header (soundfile), falling back to a librosa decode for other formats.
    """
    import soundfile

    bad: list[str] = []
    for path in dict.fromkeys(paths):
        if not path.is_file():
            bad.append(f"{path} (missing)")
            continue
        try:
            info = soundfile.info(str(path))
            if info.frames <= 0:
                bad.append(f"{path} (no audio frames)")
        except Exception:
            try:
                import warnings

                import librosa

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")     # librosa warns before its audioread fallback
                    wave, _ = librosa.load(str(path), sr=None, mono=True, duration=0.1)
                if wave.size == 0:
                    bad.append(f"{path} (no audio frames)")
            except Exception as e:  # noqa: BLE001 - every decoder failure means "unreadable"
                bad.append(f"{path} (unreadable: {type(e).__name__})")
    return bad


def _split_csvs(root: Path, fold: int | None) -> tuple[Path, Path]:
    if fold is None:
        return root / "train.csv", root / "test.csv"
    folds = root / "csv_files"
    train, test = folds / f"train_{fold}.csv", folds / f"test_{fold}.csv"
    if not train.is_file() or not test.is_file():
        have = sorted(p.stem.split("_", 1)[1] for p in folds.glob("train_*.csv")) if folds.is_dir() else []
        raise DataError(f"fold {fold} not found: expected {train} and {test}"
                        + (f" (folds present: {', '.join(have)})" if have else f" ({folds} has no folds)"))
    return train, test


def load_dataset(root: str | Path = "", fold: int | None = None, train_csv: str | Path = "",
                 test_csv: str | Path = "", name: str = "", check_files: bool = True) -> AudioDataset:
    """Read a dataset in PALM layout (or explicit CSVs) and check every audio file once.

    root: the dataset folder (holding train.csv/test.csv); CSV paths are relative to it, or to
        the CSV's own folder when no root is given.
    """
    root_path = Path(root).expanduser().resolve() if root else None
    if root_path is not None and not root_path.is_dir():
        raise DataError(f"dataset folder not found: {root_path}")
    if train_csv or test_csv:
        if not (train_csv and test_csv):
            raise DataError("give both train_csv and test_csv, or a dataset folder")
        train_path, test_path = Path(train_csv).expanduser(), Path(test_csv).expanduser()
    elif root_path is not None:
        train_path, test_path = _split_csvs(root_path, fold)
    else:
        raise DataError("no dataset: give dataset_root (PALM layout) or train_csv and test_csv")
    base = root_path or train_path.resolve().parent
    train_rows = read_csv(train_path, base)
    test_rows = read_csv(test_path, root_path or test_path.resolve().parent)
    classes = sorted({c for _, c, _ in train_rows})
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({c for _, c, _ in test_rows if c not in index})
    if unknown:
        lines = [str(line) for _, c, line in test_rows if c in unknown][:5]
        raise DataError(f"{test_path}: class(es) not in {train_path.name}: {', '.join(map(repr, unknown))} "
                        f"(lines {', '.join(lines)})")
    if check_files:
        check_audio_files([p for p, _, _ in train_rows + test_rows])
    return AudioDataset(
        name=name or (root_path.name if root_path else train_path.resolve().parent.name),
        root=base,
        classes=classes,
        train=[Sample(p, index[c], c) for p, c, _ in train_rows],
        test=[Sample(p, index[c], c) for p, c, _ in test_rows],
        fold=fold,
        sources={"train": str(train_path), "test": str(test_path)},
    )


def few_shot(samples: list[Sample], shots: int, seed: int) -> list[Sample]:
    """K samples per class, the same on every run and machine for a given (data, seed).

    Each class's clips are sorted by path before a PCG64 draw without replacement, so the
    subset does not depend on CSV order or platform. Classes with fewer clips keep all of them.
    Output is in class order, then draw order.
    """
    if shots <= 0:
        return list(samples)
    rng = np.random.Generator(np.random.PCG64([FEW_SHOT_STREAM, seed]))
    by_class: dict[int, list[Sample]] = {}
    for s in samples:
        by_class.setdefault(s.label, []).append(s)
    out: list[Sample] = []
    for label in sorted(by_class):
        pool = sorted(by_class[label], key=lambda s: str(s.path))
        take = rng.permutation(len(pool))[:shots]
        out.extend(pool[i] for i in take)
    return out


def base_new_split(classes: list[str], n_base: int | None = None) -> tuple[list[str], list[str]]:
    """Sorted classes -> (base, new): the first ceil(C/2) (or n_base) are base."""
    n = math.ceil(len(classes) / 2) if n_base is None else n_base
    if not 1 <= n < len(classes):
        raise DataError(f"n_base={n} must leave at least one base and one new class (C={len(classes)})")
    return list(classes[:n]), list(classes[n:])


def relabel(samples: list[Sample], classes: list[str]) -> list[Sample]:
    """Keep samples of `classes`, labelled by position in `classes` (a separate label space)."""
    index = {c: i for i, c in enumerate(classes)}
    return [Sample(s.path, index[s.classname], s.classname) for s in samples if s.classname in index]
