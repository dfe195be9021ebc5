"""Few-shot split files: the exact training clips of a run, written by every run and readable by any.

    {"format": "sept-fewshot/1", "dataset": "ESC50", "fold": 1, "shots": 16, "seed": 1,
     "classes": {"airplane": ["audio/1-11687-A-47.wav", ...], ...}}

Clips are paths as the dataset's training CSV gives them (relative to the dataset folder),
classes in the dataset's class order, clips in draw order. A run writes `<run>/fewshot.json`
(the clips of the classes it trains); `fewshot_file=PATH` trains on the clips a file names instead
of drawing them. `sept data fewshot` writes one file per dataset x fold x seed with the same draw
a run makes (`sept.trainer.data.few_shot`), so the run of seed s and the file of seed s train on the
same clips, and two machines given the same files train on the same clips.

A file is refused (DataError naming the file and the clip or class) when it is for another
dataset or fold, lists a class the dataset lacks or a clip its training CSV lacks (or lists
under another class), or has no clip for a class the run trains. Classes the run does not train
(new classes of a base-to-new run) may be listed; they are ignored.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sept.atomic import atomic_write_json
from sept.trainer.config import fewshot_sha256
from sept.trainer.data import AudioDataset, DataError, Sample, few_shot, load_dataset

FORMAT = "sept-fewshot/1"
RUN_FILE = "fewshot.json"


def clip_name(ds: AudioDataset, sample: Sample) -> str:
    """The clip as the CSV names it: relative to the dataset folder (absolute when outside it)."""
    try:
        return sample.path.relative_to(ds.root).as_posix()
    except ValueError:
        return str(sample.path)


def fewshot_record(ds: AudioDataset, samples: list[Sample], shots: int, seed: int,
                   source: dict[str, Any] | None = None) -> dict[str, Any]:
    """The file of `samples` (a few-shot draw of `ds.train`): classes in dataset order, clips in draw order."""
    by_class: dict[str, list[str]] = {}
    for s in samples:
        by_class.setdefault(s.classname, []).append(clip_name(ds, s))
    record: dict[str, Any] = {"format": FORMAT, "dataset": ds.name, "fold": ds.fold, "shots": shots, "seed": seed,
                              "classes": {c: by_class[c] for c in ds.classes if c in by_class}}
    if source is not None:
        record["source"] = source
    return record


def read_fewshot_file(path: str | Path, ds: AudioDataset, trained: list[str]) -> tuple[list[Sample], dict[str, Any]]:
    """The training clips a file names for the classes `trained`, as `few_shot` would order them
    (dataset class order, then the file's order), and the file's record; refused naming the clip/class."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"fewshot_file {path}: file not found")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"fewshot_file {path}: not valid JSON ({e})") from None
    if not isinstance(record, dict) or not isinstance(record.get("classes"), dict):
        raise DataError(f"fewshot_file {path}: expected an object with 'classes' mapping each class to its clips")
    if record.get("dataset") != ds.name:
        raise DataError(f"fewshot_file {path}: written for dataset {record.get('dataset')!r}, "
                        f"but the run trains on {ds.name!r}")
    if record.get("fold") != ds.fold:
        raise DataError(f"fewshot_file {path}: written for fold {record.get('fold')}, but the run uses fold {ds.fold}")
    by_path = {s.path: s for s in ds.train}
    chosen: dict[str, list[Sample]] = {}
    seen: set[Path] = set()
    for classname, clips in record["classes"].items():
        if classname not in ds.classes:
            raise DataError(f"fewshot_file {path}: class {classname!r} is not a class of {ds.name} "
                            f"({ds.sources.get('train', 'its training CSV')})")
        if not isinstance(clips, list) or not all(isinstance(c, str) for c in clips):
            raise DataError(f"fewshot_file {path}: class {classname!r}: expected a list of clip paths")
        for clip in clips:
            clip_path = Path(clip)
            sample = by_path.get(clip_path if clip_path.is_absolute() else ds.root / clip_path)
            if sample is None:
                raise DataError(f"fewshot_file {path}: clip {clip!r} (class {classname!r}) is not in "
                                f"{ds.sources.get('train', 'the training CSV')}")
            if sample.classname != classname:
                raise DataError(f"fewshot_file {path}: clip {clip!r} is listed under {classname!r}, but its class "
                                f"in {ds.sources.get('train', 'the training CSV')} is {sample.classname!r}")
            if sample.path in seen:
                raise DataError(f"fewshot_file {path}: clip {clip!r} is listed twice")
            seen.add(sample.path)
            chosen.setdefault(classname, []).append(sample)
    empty = [c for c in trained if not chosen.get(c)]
    if empty:
        raise DataError(f"fewshot_file {path}: no clip for class(es) the run trains: {', '.join(map(repr, empty))}")
    wanted = set(trained)
    return [s for c in ds.classes if c in wanted for s in chosen[c]], record


def fewshot_filename(fold: int | None, shots: int, seed: int) -> str:
    """fold<k>_shots<K>_seed<s>.json (shots<K>_seed<s>.json for a dataset without folds)."""
    return (f"fold{fold}_" if fold is not None else "") + f"shots{shots}_seed{seed}.json"


def fewshot_path(directory: str | Path, dataset: str, fold: int | None, shots: int, seed: int) -> Path:
    """Where `sept data fewshot --out DIRECTORY` writes a dataset's file: DIRECTORY/<dataset folder>/<fewshot_filename>."""
    return Path(directory) / dataset / fewshot_filename(fold, shots, seed)


def dataset_folds(folder: Path) -> list[int]:
    """Fold numbers k with csv_files/train_k.csv and test_k.csv, sorted ([] without fold files)."""
    found = []
    for path in (folder / "csv_files").glob("train_*.csv"):
        k = path.stem.split("_", 1)[1]
        if k.isdigit() and (folder / "csv_files" / f"test_{k}.csv").is_file():
            found.append(int(k))
    return sorted(found)


def chosen_folds(text: str, available: list[int], dataset: str, what: str = "--folds") -> list[int | None]:
    """--folds all | K (the first K) | k1,k2 against a dataset's folds (`sept bench --folds` reads it
    with this function too); a dataset without fold files has one split, fold None. `what` names the
    option in errors."""
    spelled, text = text, text.strip()
    try:
        numbers = [] if text == "all" else [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        numbers = None
    if numbers is None or (text != "all" and (not numbers or min(numbers) < 1)):
        raise DataError(f"{what}: expected all, a count K or a list k1,k2 of folds (got {spelled!r})")
    if not available:
        return [None]
    if text == "all":
        return list(available)
    if "," not in text:
        return list(available[:numbers[0]])
    absent = [k for k in numbers if k not in available]
    if absent:
        raise DataError(f"{what}: dataset {dataset} has no fold(s) {', '.join(map(str, absent))} "
                        f"(its folds: {', '.join(map(str, available))})")
    return numbers


def write_fewshot_files(root: str | Path, out: str | Path, shots: int, seeds: list[int],
                        datasets: list[str], folds: str = "all") -> list[Path]:
    """One file per dataset x fold x seed under `out` (`fewshot_path`), the draw `sept train` makes
    for that (dataset, fold, shots, seed); each written atomically. Returns the paths in order."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DataError(f"datasets root {root} is not a directory")
    written: list[Path] = []
    for name in datasets:
        folder = root / name
        if not (folder / "train.csv").is_file() and not (folder / "csv_files").is_dir():
            raise DataError(f"dataset {name}: no dataset folder with train.csv or csv_files/ at {folder}")
        for fold in chosen_folds(folds, dataset_folds(folder), name):
            ds = load_dataset(folder, fold)
            for seed in seeds:
                record = fewshot_record(ds, few_shot(ds.train, shots, seed), shots, seed)
                target = fewshot_path(out, ds.name, fold, shots, seed)
                atomic_write_json(target, record)
                written.append(target)
    return written


__all__ = ["FORMAT", "RUN_FILE", "clip_name", "fewshot_record", "read_fewshot_file", "fewshot_filename",
           "fewshot_path", "dataset_folds", "chosen_folds", "write_fewshot_files", "fewshot_sha256"]
