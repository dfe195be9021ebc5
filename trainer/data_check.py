"""`sept data check DIR`: is each of the 11 benchmark datasets under DIR ready to train on?

Per dataset (the facts in palm_benchmark.json: names, class lists, fold counts):

- layout: `<DIR>/<name>/train.csv` and `test.csv` (one fold), or `csv_files/train_<k>.csv` and
  `test_<k>.csv` for k = 1..folds (several folds), with columns path,classname;
- classes: the CSVs' classes against the known list (missing and extra ones named), and each
  CSV holding every class;
- audio: every listed file exists and decodes (count, first few).

A dataset missing from DIR is reported absent, which is not a problem by itself.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from sept.errors import SeptError
from sept.names import dataset_slug
from sept.trainer.data import DataError, bad_audio_files, read_csv

SHOWN = 3          # names of missing classes / bad files shown per problem


def load_benchmark() -> dict[str, dict]:
    """{name: {"classes": [...sorted, verbatim...], "folds": k}} of the 11 PALM/SEPT datasets."""
    text = (resources.files("sept.trainer") / "palm_benchmark.json").read_text(encoding="utf-8")
    return json.loads(text)


@dataclass
class DatasetReport:
    name: str
    present: bool
    folder: Path | None = None
    folds: int = 0                   # folds found (1 for a single train.csv/test.csv)
    expected_folds: int = 1
    classes: int = 0                 # distinct classes found in the CSVs
    expected_classes: int = 0
    clips: int = 0                   # distinct audio files listed
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.present and not self.problems

    @property
    def status(self) -> str:
        return "absent" if not self.present else ("ready" if self.ok else "problems")


def _listed(names: list[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:SHOWN])
    return shown + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


def slugify_or_none(name: str) -> str | None:
    """A folder's slug; None for a name that has none (such a folder matches no dataset)."""
    try:
        return dataset_slug(name)
    except SeptError:
        return None


def find_folder(root: Path, name: str) -> Path | None:
    """The folder of dataset `name` under `root`: the exact name, else the one whose slug matches."""
    if (root / name).is_dir():
        return root / name
    slug = dataset_slug(name)
    matches = [p for p in sorted(root.iterdir()) if p.is_dir() and slugify_or_none(p.name) == slug]
    return matches[0] if matches else None


def _split_files(folder: Path, folds: int) -> tuple[list[Path], list[str]]:
    """The CSVs to check, and what is missing of those the layout calls for.

    With folds, the root train.csv / test.csv are checked too whenever they exist: `sept train`
    without `--fold` and the generation's audio check read them, so a class misspelled there
    must not pass."""
    root_files = [folder / "train.csv", folder / "test.csv"]
    if folds <= 1:
        wanted, optional = root_files, []
    else:
        wanted = [folder / "csv_files" / f"{split}_{k}.csv" for k in range(1, folds + 1) for split in ("train", "test")]
        optional = [p for p in root_files if p.is_file()]
    missing = [str(p.relative_to(folder)) for p in wanted if not p.is_file()]
    return optional + [p for p in wanted if p.is_file()], missing


def check_dataset(root: Path, name: str, known: dict) -> DatasetReport:
    classes, folds = list(known["classes"]), int(known["folds"])
    folder = find_folder(root, name)
    report = DatasetReport(name, present=folder is not None, folder=folder, expected_folds=folds,
                           expected_classes=len(classes))
    if folder is None:
        return report
    files, missing_files = _split_files(folder, folds)
    if missing_files:
        report.problems.append(f"layout: missing {', '.join(missing_files[:2 * SHOWN])}"
                               + (f" and {len(missing_files) - 2 * SHOWN} more" if len(missing_files) > 2 * SHOWN else "")
                               + (f" ({folds} folds expected in csv_files/)" if folds > 1 else ""))
    report.folds = (sum((folder / "csv_files" / f"train_{k}.csv").is_file() and (folder / "csv_files" / f"test_{k}.csv").is_file()
                        for k in range(1, folds + 1)) if folds > 1
                    else int(not missing_files))
    per_file: dict[Path, set[str]] = {}
    audio: dict[Path, None] = {}
    for csv_path in files:
        try:
            rows = read_csv(csv_path, folder)
        except DataError as e:
            report.problems.append(f"csv: {e}")
            continue
        per_file[csv_path] = {c for _, c, _ in rows}
        audio.update((p, None) for p, _, _ in rows)
    seen = set().union(*per_file.values())
    report.classes, report.clips = len(seen), len(audio)
    if per_file:
        absent = [c for c in classes if c not in seen]
        if absent:
            report.problems.append(f"classes: missing {len(absent)} of {len(classes)}: {_listed(absent)}")
        extra = sorted(seen - set(classes))
        if extra:
            report.problems.append(f"classes: {len(extra)} not in the {name} class list: {_listed(extra)}")
        for csv_path, names in per_file.items():
            # a class absent from one split file only (few-shot draws and evaluation need it in each)
            lacking = [c for c in classes if c in seen and c not in names]
            if lacking:
                report.problems.append(f"classes: {csv_path.relative_to(folder)} has no clip of {_listed(lacking)}")
    bad = bad_audio_files(list(audio))
    if bad:
        first = "; ".join(b.replace(str(folder) + "/", "", 1) for b in bad[:SHOWN])
        report.problems.append(f"audio: {len(bad)} of {len(audio)} missing or unreadable: {first}"
                               + (" ..." if len(bad) > SHOWN else ""))
    return report


def check_root(root: Path, names: list[str] | None = None) -> list[DatasetReport]:
    """One report per benchmark dataset (all 11, or `names`, in that order) under `root`."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"datasets root {root} is not a directory")
    known = load_benchmark()
    wanted = list(known) if names is None else list(names)
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise DataError(f"not a benchmark dataset: {', '.join(unknown)} (known: {', '.join(known)})")
    return [check_dataset(root, n, known[n]) for n in wanted]


def print_reports(reports: list[DatasetReport], root: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"datasets under {root}")
    for column in ("dataset", "status", "folds", "classes", "clips", "problems"):
        table.add_column(column, justify="right" if column in ("folds", "classes", "clips") else "left")
    style = {"ready": "green", "problems": "red", "absent": "dim"}
    for r in reports:
        table.add_row(r.name, f"[{style[r.status]}]{r.status}[/]",
                      f"{r.folds}/{r.expected_folds}" if r.present else "",
                      f"{r.classes}/{r.expected_classes}" if r.present else "",
                      str(r.clips) if r.present else "", "\n".join(r.problems))
    Console(width=200).print(table)
