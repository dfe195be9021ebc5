"""Class lists: which classes a dataset has, in which order.

A dataset is a name plus an ordered class list, names verbatim (`cafe/restaurant`,
`Cough`). The list comes, by precedence, from an explicit list, a classes file (one class
per line), a PALM-layout dataset folder (`train.csv`/`test.csv` with `path,classname`;
classes `sorted(unique(classname))`), or the lists bundled for the PALM benchmark
datasets in `pipeline/classlists/<slug>.txt`.

A run may see only part of that list (`visibility`): the base classes of a split
(`split="base"` with a `split_policy`, see sept.splits) or the classes of a visible-classes
file. The LLM prompts, the CLAP filter's confuser comparison and the audio check then cover
those classes alone, and the version is made for them: for base-to-new training, the new
classes are never seen.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sept.names import dataset_slug

CLASSLISTS = Path(__file__).parent / "classlists"
PALM_SPLITS = ("train.csv", "test.csv")


def bundled_datasets() -> list[str]:
    """Slugs of the bundled class lists."""
    return sorted(p.stem for p in CLASSLISTS.glob("*.txt"))


def read_classes_file(path: str | Path) -> list[str]:
    """Classes from a text file, one per line, kept verbatim (surrounding whitespace
    trimmed, blank lines skipped). A repeated class is an error naming the line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"classes_file: {path} does not exist")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise ValueError(f"classes_file: {path} is not UTF-8 text ({e})") from e
    classes: list[str] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(lines, 1):
        name = line.strip()
        if not name:
            continue
        if name in seen:
            raise ValueError(f"{path}:{lineno}: class {name!r} repeats line {seen[name]}")
        seen[name] = lineno
        classes.append(name)
    if not classes:
        raise ValueError(f"classes_file: {path} lists no class")
    return classes


def bundled_classes(dataset: str) -> list[str] | None:
    """The bundled class list of `dataset` (exact name or slug, e.g. "ESC50" or "esc50"), or None."""
    path = CLASSLISTS / f"{dataset_slug(dataset)}.txt"
    return read_classes_file(path) if dataset and path.is_file() else None


def palm_dataset_dir(dataset_root: str | Path, dataset: str) -> Path:
    """The folder holding `train.csv`/`test.csv`: `dataset_root` itself, or
    `dataset_root/<dataset>` (matched exactly, then by slug)."""
    root = Path(dataset_root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset_root: {root} is not a directory")
    if any((root / s).is_file() for s in PALM_SPLITS):
        return root
    if (root / dataset).is_dir():
        return root / dataset
    slug = dataset_slug(dataset)
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        if dataset_slug(sub.name) == slug:
            return sub
    raise FileNotFoundError(
        f"dataset_root: neither {root} nor {root / dataset} holds train.csv or test.csv (PALM layout: "
        f"<root>/<dataset>/train.csv with columns path,classname)"
    )


def read_palm_rows(csv_path: Path) -> list[dict[str, str]]:
    """Rows of a PALM split file; errors name the file and line."""
    rows = []
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = [c.strip() for c in (reader.fieldnames or [])]
        if "classname" not in fields or "path" not in fields:
            raise ValueError(f"{csv_path}:1: expected columns path,classname, found {','.join(fields) or 'nothing'}")
        for row in reader:
            row = {(k or "").strip(): (v or "") for k, v in row.items()}
            name = row["classname"].strip()
            if not name:
                raise ValueError(f"{csv_path}:{reader.line_num}: empty classname")
            rows.append({"path": row["path"].strip(), "classname": name})
    return rows


def read_palm_classes(dataset_root: str | Path, dataset: str) -> list[str]:
    """`sorted(unique(classname))` over the dataset's train.csv and test.csv."""
    folder = palm_dataset_dir(dataset_root, dataset)
    names: set[str] = set()
    for split in PALM_SPLITS:
        if (folder / split).is_file():
            names.update(r["classname"] for r in read_palm_rows(folder / split))
    if not names:
        raise ValueError(f"dataset_root: {folder} has no class in {' or '.join(PALM_SPLITS)}")
    return sorted(names)


@dataclass(frozen=True)
class AudioClips:
    """The clips of the CLAP filter's audio check, and where they came from.

    clips: class -> clip paths (absolute, under the dataset folder). source: for the manifest,
    {"train_csv": the file the candidates came from, "test_csvs": the test lists whose clips were
    excluded, "excluded_test_clips": how many train-file rows those removed, "clips": class ->
    the chosen paths as the CSV writes them} (relative paths only: no local folder).
    """

    clips: dict[str, list[Path]]
    source: dict[str, Any]


def _clip_key(path: str) -> str:
    # "./a/b.wav" and "a//b.wav" name one clip
    return os.path.normpath(path.strip())


def audio_check_clips(dataset_root: str | Path, dataset: str, classes: list[str], per_class: int) -> AudioClips:
    """The first `per_class` clips of every class in `classes` (file order) from the root
    train.csv that are a test clip of no fold, for the CLAP filter's text-audio check.

    One neighbor version serves every fold of a dataset, and PALM's scripts overwrite the root
    train.csv with a fold's copy: a clip of it can be a test clip of another fold. So every clip
    listed in test.csv or any csv_files/test_<k>.csv is excluded; a class whose every train.csv
    clip was excluded is refused, naming it (a class with no train.csv row gets no clip, and the
    check no audio prototype for it). Paths in the CSVs are relative to the dataset folder.
    """
    folder = palm_dataset_dir(dataset_root, dataset)
    split = folder / "train.csv"
    if not split.is_file():
        raise FileNotFoundError(f"audio check: {split} not found (clips come from the training CSV only)")
    tests = ([folder / "test.csv"] if (folder / "test.csv").is_file() else []) + sorted(
        (folder / "csv_files").glob("test_*.csv"), key=lambda p: (len(p.name), p.name))
    held_out = {_clip_key(r["path"]) for t in tests for r in read_palm_rows(t)}
    clips: dict[str, list[Path]] = {c: [] for c in classes}
    chosen: dict[str, list[str]] = {c: [] for c in classes}
    excluded = 0
    emptied: set[str] = set()   # classes with train.csv clips, each a test clip of some fold
    for row in read_palm_rows(split):
        got = clips.get(row["classname"])
        if got is None:
            continue
        if _clip_key(row["path"]) in held_out:
            excluded += 1
            emptied.add(row["classname"])
            continue
        if len(got) < per_class:
            got.append(folder / row["path"])
            chosen[row["classname"]].append(row["path"])
    # (a class with no row in train.csv at all gets no audio prototype, as before)
    empty = [c for c in classes if not clips[c] and c in emptied]
    if empty:
        raise ValueError(
            f"audio check: class {empty[0]!r}{f' (and {len(empty) - 1} more)' if len(empty) > 1 else ''} has no "
            f"clip in {split} that is a test clip of no fold ({', '.join(t.relative_to(folder).as_posix() for t in tests)} "
            "list every other one); a neighbor version serves every fold, so its audio check may use no fold's "
            "test clip: drop audio_clips_per_class or add training-only clips to train.csv")
    source = {"train_csv": split.relative_to(folder).as_posix(),
              "test_csvs": [t.relative_to(folder).as_posix() for t in tests],
              "excluded_test_clips": excluded, "clips": chosen}
    return AudioClips(clips, source)


def palm_clips(dataset_root: str | Path, dataset: str, classes: list[str], per_class: int) -> dict[str, list[Path]]:
    """`audio_check_clips(...).clips`: the audio check's clips per class, no fold's test clip among them."""
    return audio_check_clips(dataset_root, dataset, classes, per_class).clips


def dataset_classes(cfg: Any) -> list[str]:
    """Ordered class list of the dataset for a config with fields `dataset`, `classes`,
    `classes_file`, `dataset_root`: explicit list > classes file > dataset root > bundled list."""
    classes = getattr(cfg, "classes", None)
    if classes:
        return list(classes)
    if getattr(cfg, "classes_file", None):
        return read_classes_file(cfg.classes_file)
    if getattr(cfg, "dataset_root", None):
        return read_palm_classes(cfg.dataset_root, cfg.dataset)
    found = bundled_classes(cfg.dataset)
    if found is None:
        raise ValueError(
            f"dataset: no bundled class list for {cfg.dataset!r} (bundled: {', '.join(bundled_datasets())}); "
            "pass classes, classes_file or dataset_root"
        )
    return found


@dataclass(frozen=True)
class Visibility:
    """Which classes a generation run may see.

    classes: the dataset's classes, in order. visible: the ones the run sees and makes
    neighbors for, in the same order. split: the resolved split (`Split.to_dict()` plus
    "part") when the run was made from one, else None.
    """

    classes: list[str]
    visible: list[str]
    split: dict | None = None


def visibility(cfg: Any) -> Visibility:
    """The visible classes of a config with the class fields above and optional `split`
    ("base" | "new" | "all"), `split_policy`, `split_seed`, `visible_classes_file`."""
    from sept.splits import SplitError, resolve_split

    classes = dataset_classes(cfg)
    part = getattr(cfg, "split", None)
    visible_file = getattr(cfg, "visible_classes_file", None)
    if visible_file is not None:
        listed = read_classes_file(visible_file)
        unknown = [c for c in listed if c not in classes]
        if unknown:
            raise ValueError(f"visible_classes_file: {visible_file}: not classes of dataset {cfg.dataset!r}: "
                             f"{', '.join(map(repr, unknown))}")
        return Visibility(classes, [c for c in classes if c in set(listed)])
    if part is None:
        return Visibility(classes, list(classes))
    try:
        split = resolve_split(classes, getattr(cfg, "split_policy", "sorted"), getattr(cfg, "split_seed", 42),
                              dataset=cfg.dataset)
        visible = split.part(part)
    except SplitError as e:
        raise ValueError(f"split: {e}") from None
    order = {c: i for i, c in enumerate(classes)}
    return Visibility(classes, sorted(visible, key=order.__getitem__), {**split.to_dict(), "part": part})


def resolve_classes(cfg: Any) -> list[str]:
    """The classes a run generates neighbors for: the visible part of the dataset's classes."""
    return visibility(cfg).visible
