"""`sept data import`: a dataset as users have it -> PALM's layout, checked, in one rename.

Sources:

- `folder`: SRC/<class>/.../<clip>: one subfolder per class, its name the class name verbatim
  (spaces, capitals, non-ASCII kept); every audio file below it (any depth) is a clip;
- `csv`: SRC is a metadata CSV naming each clip's path, label and optionally fold
  (`path_col`, `label_col`, `fold_col`); paths are relative to the CSV's folder or to
  `audio_root`. Presets fill these in for ESC-50's `esc50.csv` and UrbanSound8K's
  `UrbanSound8K.csv`, with their folds and their class names as the PALM benchmark spells them;
- `hf`: a dataset written by `datasets`' `save_to_disk` (a Dataset or a DatasetDict, whose splits
  are pooled) or a folder of parquet files, with an `Audio` column and a label column (a
  `ClassLabel`, whose names are the classes, or plain strings). Each clip's stored bytes are
  written out as they are (no re-encoding), named after the stored file name; a clip stored by
  path only is taken from that path, which must lie inside SRC. Needs `pip install sept[hf]`.

Result, at OUT (= ROOT/NAME):

    OUT/train.csv, test.csv                        no folds: a stratified, seeded test fraction
    OUT/csv_files/train_<k>.csv, test_<k>.csv      folds 1..K: test_k = the clips of fold k
    OUT/audio/<class-slug>/<file>                  symlinks to the source clips, or copies

Every clip is read before anything is written; then the result goes through the data check
(`check_dataset` when NAME is one of the benchmark's datasets, else `load_dataset` of each split)
while it still sits in a hidden temporary folder beside OUT, and only a passing import is renamed
to OUT. A refused import raises DataError (one line naming the clip, class, fold or line at
fault) and leaves nothing at OUT.
"""
from __future__ import annotations

import csv
import io
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sept.atomic import temp_sibling
from sept.errors import SeptError
from sept.names import dataset_slug
from sept.trainer.data import DataError, bad_audio_files, load_dataset
from sept.trainer.data_check import check_dataset, load_benchmark

AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".aif", ".aiff", ".wma", ".webm"}
SHOWN = 3


@dataclass(frozen=True)
class Preset:
    """A known metadata CSV: its columns, how a row names its file, and the benchmark's spelling."""

    dataset: str               # the benchmark dataset whose class names the labels become
    path_col: str
    label_col: str
    fold_col: str
    path_template: str         # formatted with the row's fields
    audio_dirs: tuple[str, ...]  # where its clips lie, relative to the CSV's folder, tried in order


PRESETS = {
    # ESC-50: meta/esc50.csv, audio/<filename>
    "esc50": Preset("ESC50", "filename", "category", "fold", "{filename}", ("../audio", "audio", ".")),
    # UrbanSound8K: metadata/UrbanSound8K.csv, audio/fold<k>/<slice_file_name>
    "urbansound8k": Preset("UrbanSound8K", "slice_file_name", "class", "fold", "fold{fold}/{slice_file_name}",
                           ("../audio", "audio", ".")),
}


@dataclass(frozen=True)
class Clip:
    source: Path               # absolute path of the source audio
    classname: str             # verbatim
    fold: int | None = None


@dataclass
class ImportResult:
    out: Path
    classes: list[str]
    clips: int
    folds: int                 # 0: train.csv/test.csv


def _inside(path: Path, root: Path) -> bool:
    # lexical, not resolved: a source that is itself a tree of symlinks stays importable,
    # while "../x.wav" or an absolute path elsewhere is refused
    try:
        Path(os.path.normpath(path)).relative_to(os.path.normpath(root))
        return True
    except ValueError:
        return False


def collect_folder(src: Path) -> list[Clip]:
    """The clips of a folder-per-class tree; an empty class folder is refused."""
    src = Path(src).expanduser().absolute()
    if not src.is_dir():
        raise DataError(f"source folder not found: {src}")
    class_dirs = sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(f"{src}: no class subfolders (expected one folder per class)")
    clips: list[Clip] = []
    for folder in class_dirs:
        found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES
                       and not any(part.startswith(".") for part in p.relative_to(folder).parts))
        if not found:
            raise DataError(f"class {folder.name!r} has no clip (no audio file under {folder})")
        for path in found:
            if not _inside(path, src):
                raise DataError(f"clip {path} lies outside the source {src}")
            clips.append(Clip(path, folder.name))
    return clips


def _preset_root(preset: Preset, csv_dir: Path, first: dict[str, str]) -> Path:
    for rel in preset.audio_dirs:
        candidate = (csv_dir / rel)
        try:
            if (candidate / preset.path_template.format(**first)).is_file():
                return Path(os.path.normpath(candidate))
        except KeyError:
            break
    return csv_dir


def collect_csv(csv_path: Path, path_col: str | None = None, label_col: str | None = None,
                fold_col: str | None = None, audio_root: Path | None = None,
                preset: str | None = None) -> list[Clip]:
    """The clips a metadata CSV lists; its labels renamed as the benchmark spells them under a preset."""
    csv_path = Path(csv_path).expanduser().absolute()
    if not csv_path.is_file():
        raise DataError(f"metadata CSV not found: {csv_path}")
    known: Preset | None = None
    if preset is not None:
        known = PRESETS.get(preset.lower())
        if known is None:
            raise DataError(f"--preset {preset!r}: known presets are {', '.join(PRESETS)}")
        path_col, label_col = path_col or known.path_col, label_col or known.label_col
        fold_col = fold_col or known.fold_col
    if not path_col or not label_col:
        raise DataError("--from csv needs --path-col and --label-col (or --preset esc50|urbansound8k)")
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        reader.fieldnames = columns
        wanted = [c for c in (path_col, label_col, fold_col) if c]
        missing = [c for c in wanted if c not in columns]
        if missing:
            raise DataError(f"{csv_path}: line 1: no column {', '.join(map(repr, missing))} "
                            f"(header is {', '.join(columns) or 'empty'})")
        rows = [(reader.line_num, {k: (v or "").strip() for k, v in row.items() if k is not None}) for row in reader]
    if not rows:
        raise DataError(f"{csv_path}: no rows")
    csv_dir = csv_path.parent
    if audio_root is not None:
        root = Path(audio_root).expanduser().absolute()
    elif known is not None:
        root = _preset_root(known, csv_dir, rows[0][1])
    else:
        root = csv_dir
    spelled = {}
    if known is not None:
        # ESC-50 and UrbanSound8K write "crying_baby", "dog_bark"; the benchmark "crying baby", "dog bark"
        spelled = {c.replace(" ", "_"): c for c in load_benchmark()[known.dataset]["classes"]}
    clips: list[Clip] = []
    for line, row in rows:
        label = row[label_col]
        if not label:
            raise DataError(f"{csv_path}: line {line}: empty {label_col!r}")
        if known is not None:
            if label not in spelled:
                raise DataError(f"{csv_path}: line {line}: {label!r} is not a {known.dataset} class")
            label = spelled[label]
        rel = known.path_template.format(**row) if known is not None else row[path_col]
        if not rel:
            raise DataError(f"{csv_path}: line {line}: empty {path_col!r}")
        fold = None
        if fold_col:
            try:
                fold = int(row[fold_col])
            except ValueError:
                raise DataError(f"{csv_path}: line {line}: fold {row[fold_col]!r} is not an integer") from None
        path = root / rel
        if not _inside(path, root):
            raise DataError(f"{csv_path}: line {line}: path {rel!r} lies outside {root}")
        clips.append(Clip(Path(os.path.normpath(path)), label, fold))
    if fold_col:
        folds = sorted({c.fold for c in clips})
        expected = list(range(1, len(folds) + 1))
        if folds != expected or len(folds) < 2:
            raise DataError(f"{csv_path}: fold column {fold_col!r} holds folds {', '.join(map(str, folds))}; "
                            f"expected 1..K with no gap and K >= 2")
    return clips


def class_slugs(classes: list[str]) -> dict[str, str]:
    """{class: folder slug}; a class with no slug, or two with the same one, is refused."""
    slugs: dict[str, str] = {}
    owner: dict[str, str] = {}
    for name in classes:
        try:
            slug = dataset_slug(name)
        except SeptError:
            raise DataError(f"class {name!r} has no usable folder name (its slug is empty)") from None
        if slug in owner:
            raise DataError(f"classes {owner[slug]!r} and {name!r} both become the folder name {slug!r}")
        owner[slug], slugs[name] = name, slug
    return slugs


def stratified_split(clips: list[Clip], test_fraction: float, seed: int) -> tuple[list[Clip], list[Clip]]:
    """Per class, a seeded `test_fraction` of the clips (at least one, never all) go to test."""
    if not 0 < test_fraction < 1:
        raise DataError(f"--test-fraction must lie strictly between 0 and 1, got {test_fraction}")
    rng = np.random.default_rng(seed)
    train: list[Clip] = []
    test: list[Clip] = []
    for name in sorted({c.classname for c in clips}):
        mine = sorted((c for c in clips if c.classname == name), key=lambda c: str(c.source))
        order = rng.permutation(len(mine))
        n_test = min(len(mine) - 1, max(1, round(test_fraction * len(mine))))
        test += [mine[i] for i in order[:n_test]]
        train += [mine[i] for i in order[n_test:]]
    return train, test


def _write_split(path: Path, rows: list[tuple[str, str]]) -> None:
    # a file of the hidden folder under construction: the final rename is what makes it visible
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "classname"])
    writer.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(buffer.getvalue(), encoding="utf-8")


def _place_audio(clips: list[Clip], folder: Path, slugs: dict[str, str], copy: bool,
                 move: bool = False) -> dict[Path, str]:
    """Link (or copy, or move: files staged for this import) each clip under folder/audio/<slug>/;
    {source: path relative to folder}."""
    placed: dict[Path, str] = {}
    taken: set[str] = set()
    for clip in clips:
        if clip.source in placed:
            continue
        stem, suffix = clip.source.stem, clip.source.suffix
        rel, n = f"audio/{slugs[clip.classname]}/{stem}{suffix}", 1
        while rel in taken:          # same file name from two source folders of one class
            n += 1
            rel = f"audio/{slugs[clip.classname]}/{stem}-{n}{suffix}"
        taken.add(rel)
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if move:
            os.rename(clip.source, target)
        elif copy:
            shutil.copy2(clip.source, target)
        else:
            target.symlink_to(clip.source.resolve())
        placed[clip.source] = rel
    return placed


def _check_result(parent: Path, folder: Path, folds: int) -> None:
    known = load_benchmark()
    name = next((n for n in known if dataset_slug(n) == dataset_slug(folder.name)), None)
    if name is not None:
        report = check_dataset(parent, name, known[name])
        if report.problems:
            raise DataError(f"{name} as imported fails the data check: " + "; ".join(report.problems))
        return
    for fold in (range(1, folds + 1) if folds else [None]):
        load_dataset(folder, fold=fold, check_files=True)


def import_dataset(clips: list[Clip], out: Path, *, copy: bool = False, test_fraction: float = 0.2,
                   seed: int = 0, move: bool = False) -> ImportResult:
    """Write `clips` as a PALM-layout dataset at `out`, checked, in one rename (see the module doc)."""
    out = Path(out).expanduser().absolute()
    if out.exists() or out.is_symlink():
        raise DataError(f"--out {out} already exists")
    classes = sorted({c.classname for c in clips})
    if not clips:
        raise DataError("the source lists no clip")
    slugs = class_slugs(classes)
    labelled: dict[Path, str] = {}
    for clip in clips:
        if labelled.setdefault(clip.source, clip.classname) != clip.classname:
            raise DataError(f"clip {clip.source} is listed with two classes, {labelled[clip.source]!r} "
                            f"and {clip.classname!r} (one class per clip)")
    bad = bad_audio_files([c.source for c in clips])
    if bad:
        raise DataError(f"{len(bad)} clip(s) missing or unreadable: " + "; ".join(bad[:SHOWN])
                        + (f" and {len(bad) - SHOWN} more" if len(bad) > SHOWN else ""))
    folded = clips[0].fold is not None
    folds = max(c.fold for c in clips) if folded else 0
    if folded:
        for k in range(1, folds + 1):
            lacking = [n for n in classes if not any(c.classname == n and c.fold != k for c in clips)]
            if lacking:
                raise DataError(f"fold {k}: class(es) {', '.join(map(repr, lacking[:SHOWN]))} have no clip "
                                f"outside fold {k}, so train_{k}.csv would lack them")
    out.parent.mkdir(parents=True, exist_ok=True)
    parent = temp_sibling(out)
    parent.mkdir()
    try:
        folder = parent / out.name
        placed = _place_audio(clips, folder, slugs, copy, move)

        def rows(chosen: list[Clip]) -> list[tuple[str, str]]:
            return [(placed[c.source], c.classname) for c in chosen]

        if folded:
            for k in range(1, folds + 1):
                _write_split(folder / "csv_files" / f"train_{k}.csv", rows([c for c in clips if c.fold != k]))
                _write_split(folder / "csv_files" / f"test_{k}.csv", rows([c for c in clips if c.fold == k]))
        else:
            train, test = stratified_split(clips, test_fraction, seed)
            _write_split(folder / "train.csv", rows(train))
            _write_split(folder / "test.csv", rows(test))
        _check_result(parent, folder, folds)
        os.rename(folder, out)
    finally:
        shutil.rmtree(parent, ignore_errors=True)
    return ImportResult(out, classes, len({c.source for c in clips}), folds)


MAGIC = ((b"RIFF", ".wav"), (b"fLaC", ".flac"), (b"OggS", ".ogg"), (b"ID3", ".mp3"), (b"\xff\xfb", ".mp3"),
         (b"FORM", ".aiff"))


def _hf_table(src: Path):
    """(pyarrow table, datasets Features) of a save_to_disk folder or a folder of parquet files."""
    try:
        import datasets
    except ImportError:
        raise DataError("--from hf needs the datasets package: pip install 'sept[hf]'") from None
    import pyarrow as pa

    if (src / "state.json").is_file() or (src / "dataset_dict.json").is_file():
        loaded = datasets.load_from_disk(str(src))
        parts = list(loaded.values()) if isinstance(loaded, datasets.DatasetDict) else [loaded]
        features = parts[0].features
        differing = [p for p in parts[1:] if p.features != features]
        if differing:
            raise DataError(f"{src}: its splits have different features; import them one by one")
        # the arrow view reads the stored bytes without decoding (no audio decoder needed)
        return pa.concat_tables([p.with_format("arrow")[:] for p in parts]), features
    files = sorted(src.rglob("*.parquet"))
    if not files:
        raise DataError(f"{src}: neither a save_to_disk folder (state.json) nor a folder of parquet files")
    import pyarrow.parquet as pq

    tables = [pq.read_table(f) for f in files]
    try:
        table = pa.concat_tables(tables)
    except pa.ArrowInvalid as e:
        raise DataError(f"{src}: its parquet files differ in schema ({e})") from None
    return table, datasets.Features.from_arrow_schema(table.schema)


def collect_hf(src: Path, staging: Path, audio_col: str | None = None, label_col: str | None = None,
               fold_col: str | None = None) -> list[Clip]:
    """The clips of a `datasets` folder, their bytes written under `staging` (see the module doc)."""
    import datasets

    src = Path(src).expanduser().absolute()
    if not src.is_dir():
        raise DataError(f"source folder not found: {src}")
    table, features = _hf_table(src)

    def pick(given: str | None, kind, what: str) -> str:
        if given is not None:
            if given not in features:
                raise DataError(f"{src}: no column {given!r} (columns: {', '.join(features)})")
            return given
        found = [n for n, f in features.items() if isinstance(f, kind)]
        if len(found) != 1:
            raise DataError(f"{src}: {len(found)} {kind.__name__} columns ({', '.join(found) or 'none'}); "
                            f"name the {what} column with --{what}-col")
        return found[0]

    audio_col = pick(audio_col, datasets.Audio, "audio")
    label_col = pick(label_col, datasets.ClassLabel, "label")
    if not isinstance(features[audio_col], datasets.Audio):
        raise DataError(f"{src}: column {audio_col!r} is not an Audio column")
    label_feature = features[label_col]
    names = label_feature.names if isinstance(label_feature, datasets.ClassLabel) else None
    if names is None and not (isinstance(label_feature, datasets.Value) and label_feature.dtype in ("string", "large_string")):
        raise DataError(f"{src}: label column {label_col!r} is neither a ClassLabel nor strings")
    if fold_col is not None and fold_col not in features:
        raise DataError(f"{src}: no column {fold_col!r} (columns: {', '.join(features)})")
    staging.mkdir(parents=True, exist_ok=True)
    clips: list[Clip] = []
    row = 0
    columns = [c for c in (audio_col, label_col, fold_col) if c]
    for batch in table.select(columns).to_batches():
        audios, labels = batch.column(audio_col).to_pylist(), batch.column(label_col).to_pylist()
        folds = batch.column(fold_col).to_pylist() if fold_col else [None] * len(labels)
        for audio, label, fold in zip(audios, labels, folds):
            where = f"{src}: row {row}"
            if label is None or (names is not None and not 0 <= label < len(names)):
                raise DataError(f"{where}: label {label!r} is not a class")
            classname = names[label] if names is not None else label.strip()
            stored = (audio or {}).get("path") or ""
            data = (audio or {}).get("bytes")
            if data:
                base = Path(stored).name
                suffix = Path(base).suffix.lower()
                if suffix not in AUDIO_SUFFIXES:
                    suffix = next((s for magic, s in MAGIC if data.startswith(magic)), ".audio")
                path = staging / f"{row:06d}-{Path(base).stem or 'clip'}{suffix}"
                path.write_bytes(data)
            elif stored:
                path = Path(stored) if Path(stored).is_absolute() else src / stored
                if not _inside(path, src):
                    raise DataError(f"{where}: clip {stored!r} holds no bytes and its path lies outside {src}")
            else:
                raise DataError(f"{where}: no audio (neither bytes nor a path)")
            if fold_col:
                try:
                    fold = int(fold)
                except (TypeError, ValueError):
                    raise DataError(f"{where}: fold {fold!r} is not an integer") from None
            clips.append(Clip(path, classname, fold))
            row += 1
    if not clips:
        raise DataError(f"{src}: no rows")
    if names is not None:
        empty = [n for n in names if not any(c.classname == n for c in clips)]
        if empty:
            raise DataError(f"class {empty[0]!r} has no clip (a ClassLabel name no row carries)")
    if fold_col:
        folds_found = sorted({c.fold for c in clips})
        if folds_found != list(range(1, len(folds_found) + 1)) or len(folds_found) < 2:
            raise DataError(f"{src}: fold column {fold_col!r} holds folds {', '.join(map(str, folds_found))}; "
                            f"expected 1..K with no gap and K >= 2")
    return clips


def import_hf(src: Path, out: Path, *, audio_col: str | None = None, label_col: str | None = None,
              fold_col: str | None = None, copy: bool = False, test_fraction: float = 0.2,
              seed: int = 0) -> ImportResult:
    """`collect_hf` into a hidden staging folder beside `out`, then `import_dataset`, which moves
    the written clips into place (clips stored by path are linked or copied)."""
    out = Path(out).expanduser().absolute()
    if out.exists() or out.is_symlink():
        raise DataError(f"--out {out} already exists")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = temp_sibling(out)
    try:
        clips = collect_hf(src, staging, audio_col, label_col, fold_col)
        staged = [c for c in clips if _inside(c.source, staging)]
        others = [c for c in clips if not _inside(c.source, staging)]
        if staged and others:
            # mixed sources: the staged files are this import's own, so copying them is safe
            return import_dataset(clips, out, copy=True, test_fraction=test_fraction, seed=seed)
        return import_dataset(clips, out, copy=copy, test_fraction=test_fraction, seed=seed, move=bool(staged))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
