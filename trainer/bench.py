"""Benchmark sweeps without an orchestrator: the run grid, config hashes, aggregation, tables, plots.

    spec = BenchSpec(datasets_root="Audio-Datasets", checkpoint="clap.pt", methods=["coop"],
                     sept=["off", "on"], neighbors="base-v1", seeds=[1, 2, 3])
    plan = plan_bench(spec)            # every (dataset, fold, method, arm, seed) -> resolved TrainConfig + hash
    ...                                # flows/sweep.py trains the runs that are not done
    records = [load_record(run) for run in plan.runs]
    write_outputs(plan, records)       # runs.csv, table.md, table.csv, plots/*.png

A run is identified by the hash of its resolved config (`config_hash`), without the fields that
only say where things go (output folder, run name, cache folder, device): a run whose
results.json holds a config with the same hash is done and never redone.

Aggregation (base2new), per (dataset, method, arm): Base and New are the mean and sample std
over folds x seeds; H per dataset is the harmonic mean of those means. The average over
datasets is the mean of the per-dataset Base, New and H (the SEPT paper's convention: its CoOp
row reads 65.00 / 34.09 / 42.83, where H of the means would be 44.72); H of the mean Base and
New is shown too, labelled as the CoOp paper's convention. Figures are percentages.
Cross-dataset: accuracy on the source's own test split and on each target, mean over targets.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from sept.trainer.config import ConfigError, TrainConfig, config_from_dict, make_config, parse_overrides
from sept.trainer.metrics import harmonic_mean

PROTOCOLS = ("base2new", "cross")
ARMS = ("off", "on", "random")
# row label = method label + arm suffix
METHOD_LABELS = {"zeroshot": "Zero-shot", "coop": "CoOp", "cocoop": "CoCoOp", "kgcoop": "KgCoOp", "palm": "PALM",
                 "dept": "DePT"}
ARM_SUFFIX = {"off": "", "on": " + SEPT", "random": " + random neighbors"}
# The SEPT paper's 11-dataset base-to-new averages (Base, New, H), in percent.
PUBLISHED: dict[tuple[str, str], tuple[float, float, float]] = {
    ("coop", "off"): (65.00, 34.09, 42.83),
    ("coop", "on"): (64.36, 42.98, 49.70),
    ("cocoop", "off"): (69.13, 36.83, 46.26),
    ("cocoop", "on"): (68.63, 42.59, 50.65),
    ("kgcoop", "off"): (37.99, 37.42, 36.39),
    ("kgcoop", "on"): (58.92, 45.28, 49.79),
}
# config fields that say where outputs go, not what is computed
HASH_EXCLUDED = ("out_dir", "run_name", "cache_dir", "device", "eval_every")
RESULTS = "results.json"
SWEEP_INFO = "sweep.json"


class BenchError(ValueError):
    """The bench cannot run as asked; the message names the parameter, dataset or file."""


def _comma_list(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


class BenchSpec(BaseModel):
    """What a bench runs: the grid and the options every run shares. Also the flow's parameters."""

    model_config = ConfigDict(extra="forbid")

    protocol: Literal["base2new", "cross"] = "base2new"
    datasets_root: str
    checkpoint: str = ""
    methods: list[str] = ["coop"]
    sept: list[str] = ["off", "on"]            # arms
    neighbors: str | None = None               # tag of the per-dataset versions of the "on" arm
    random_neighbors: str = "random"           # tag of the "random" arm's versions
    seeds: list[int] = [1]
    datasets: list[str] = []                   # base2new; [] = every benchmark dataset present
    folds: str = "all"                         # all | K (the first K) | k1,k2,... (those)
    split: str = "sorted"                      # sorted | shuffled | file:PATH
    split_seed: int = 42
    source: str | None = None                  # cross
    targets: list[str] = []                    # cross
    options: list[str] = []                    # key=value for every run; METHOD.key=value for one method
    out: str = "bench"
    store: str | None = None

    @field_validator("methods", "sept", "seeds", "datasets", "targets", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        # comma-separated on the command line and in deployment parameters
        return _comma_list(value)

    @field_validator("options", mode="before")
    @classmethod
    def _option_words(cls, value: Any) -> Any:
        # "epochs=1 shots=2" as one deployment parameter
        return value.split() if isinstance(value, str) else value

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, value: list[str]) -> list[str]:
        from sept.trainer.config import METHOD_DEFAULTS

        unknown = [m for m in value if m not in METHOD_DEFAULTS]
        if unknown or not value:
            raise ValueError(f"unknown method(s) {', '.join(map(repr, unknown))}; known: {', '.join(METHOD_DEFAULTS)}"
                             if unknown else "give at least one method")
        return list(dict.fromkeys(value))

    @field_validator("sept")
    @classmethod
    def _known_arms(cls, value: list[str]) -> list[str]:
        unknown = [a for a in value if a not in ARMS]
        if unknown or not value:
            raise ValueError(f"unknown arm(s) {', '.join(map(repr, unknown))}; known: {', '.join(ARMS)}"
                             if unknown else "give at least one arm (off, on, random)")
        return list(dict.fromkeys(value))

    @field_validator("seeds")
    @classmethod
    def _some_seed(cls, value: list[int]) -> list[int]:
        if not value:
            raise ValueError("give at least one seed")
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _consistent(self) -> "BenchSpec":
        if "on" in self.sept and not self.neighbors:
            raise ValueError("the 'on' arm needs the neighbor tag (--neighbors TAG)")
        if self.protocol == "cross":
            if not self.source:
                raise ValueError("cross: give the source dataset (--source)")
            if not self.targets:
                raise ValueError("cross: give at least one target dataset (--targets)")
            if self.source in self.targets:
                raise ValueError(f"cross: the source {self.source!r} is also a target")
        parse_options(self.options, self.methods)   # refuses a malformed option early
        return self


def spec_from(values: dict[str, Any]) -> BenchSpec:
    try:
        return BenchSpec(**values)
    except ValidationError as e:
        parts = []
        for item in e.errors():
            name = ".".join(str(x) for x in item["loc"])
            parts.append(f"parameter {name!r}: {item['msg'].removeprefix('Value error, ')}" if name
                         else item["msg"].removeprefix("Value error, "))
        raise BenchError("; ".join(parts)) from None


def parse_options(options: list[str], methods: list[str]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """["epochs=2", "palm.lr=0.1"] -> ({"epochs": 2}, {"palm": {"lr": 0.1}})."""
    shared: dict[str, Any] = {}
    scoped: dict[str, dict[str, Any]] = {}
    try:
        for key, value in parse_overrides(list(options)).items():
            head, dot, rest = key.partition(".")
            if dot:
                if head not in methods:
                    raise BenchError(f"option {key}={value!r}: {head!r} is not one of the bench's methods "
                                     f"({', '.join(methods)})")
                scoped.setdefault(head, {})[rest] = value
            else:
                shared[key] = value
    except ConfigError as e:
        raise BenchError(str(e)) from None
    for key in ("method", "seed", "fold", "neighbors", "dataset_root", "base_to_new", "targets", "run_name", "out_dir"):
        if key in shared or any(key in s for s in scoped.values()):
            raise BenchError(f"option {key!r} is set by the bench itself (use its own flag)")
    return shared, scoped


# --------------------------------------------------------------------------- config identity

def config_hash(config: TrainConfig | dict[str, Any]) -> str:
    """sha256 (hex, 16 chars) of the resolved config without the fields that only place outputs.

    A saved config is re-validated first, so fields added to TrainConfig later (with defaults)
    do not change the hash of an existing run."""
    cfg = config if isinstance(config, TrainConfig) else config_from_dict(config)
    values = {k: v for k, v in cfg.to_dict().items() if k not in HASH_EXCLUDED}
    blob = json.dumps(values, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


# --------------------------------------------------------------------------- planning

@dataclass
class PlannedRun:
    name: str
    dataset: str
    fold: int | None
    method: str
    arm: str
    seed: int
    config: dict[str, Any]
    config_hash: str

    @property
    def run_dir(self) -> Path:
        return Path(self.config["out_dir"]) / self.config["run_name"]

    @property
    def label(self) -> str:
        return row_label(self.method, self.arm)

    def done(self) -> bool:
        """results.json exists and holds a config with this run's hash."""
        path = self.run_dir / RESULTS
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            return config_hash(saved["config"]) == self.config_hash
        except (OSError, ValueError, KeyError, TypeError, ConfigError):
            return False


@dataclass
class MissingNeighbors:
    dataset: str
    arm: str
    tag: str
    reason: str
    command: str


@dataclass
class Plan:
    spec: BenchSpec
    runs: list[PlannedRun]
    datasets: list[str]                       # base2new: evaluated datasets; cross: [source, *targets]
    missing: list[MissingNeighbors] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)   # data check
    neighbors: dict[tuple[str, str], str] = field(default_factory=dict)   # (dataset, arm) -> DATASET@id

    @property
    def out(self) -> Path:
        return Path(self.spec.out)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.problems

    def describe_problems(self) -> str:
        lines = []
        if self.problems:
            lines.append("data check found problems:")
            lines += [f"  {p}" for p in self.problems]
        if self.missing:
            lines.append("missing neighbor versions:")
            for m in self.missing:
                lines.append(f"  {m.dataset} ({m.arm} arm, tag {m.tag!r}): {m.reason}")
                lines.append(f"    {m.command}")
        return "\n".join(lines)


def row_label(method: str, arm: str) -> str:
    return METHOD_LABELS.get(method, method) + ARM_SUFFIX[arm]


def dataset_folds(folder: Path) -> list[int]:
    """Fold numbers k with csv_files/train_k.csv and test_k.csv, sorted."""
    found = []
    for path in (folder / "csv_files").glob("train_*.csv"):
        k = path.stem.split("_", 1)[1]
        if k.isdigit() and (folder / "csv_files" / f"test_{k}.csv").is_file():
            found.append(int(k))
    return sorted(found)


def select_folds(spec_folds: str, available: list[int], dataset: str) -> list[int | None]:
    """--folds all | K | k1,k2 against a dataset's folds.

    K takes each dataset's first min(K, folds) folds, so one bench spans datasets with 5 folds and
    with 1; a dataset without fold files (one train.csv/test.csv) runs once, fold None."""
    text = spec_folds.strip()
    try:
        numbers = [] if text == "all" else [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        numbers = None
    if numbers is None or (text != "all" and (not numbers or min(numbers) < 1)):
        raise BenchError(f"parameter 'folds': expected all, a count K or a list k1,k2 of folds (got {spec_folds!r})")
    if not available:
        return [None]
    if text == "all":
        return list(available)
    if "," not in text:
        return list(available[:numbers[0]])
    absent = [k for k in numbers if k not in available]
    if absent:
        raise BenchError(f"parameter 'folds': dataset {dataset} has no fold(s) {', '.join(map(str, absent))} "
                         f"(its folds: {', '.join(map(str, available))})")
    return numbers


def generate_command(spec: BenchSpec, dataset: str, arm: str, tag: str, on_ref: str | None,
                     generate_args: list[str] | None = None) -> str:
    """The `sept generate` command that makes the version an arm needs for a dataset."""
    import shlex

    store = ["--store", spec.store] if spec.store else []
    if arm == "random":
        # like the 'on' arm's version (shown by its 12-character id), or what its tag names
        like = (on_ref[:on_ref.index("@") + 13] if on_ref else f"{dataset}@{spec.neighbors or 'REF'}")
        args = ["sept", "generate", "--backend", "random-words", "--like", like, "--tag", tag, *store]
    else:
        args = ["sept", "generate", "--dataset", dataset,
                "--dataset-root", str(Path(spec.datasets_root) / dataset)]
        if spec.protocol == "base2new":
            args += ["--split", "base"]
            if spec.split != "sorted":
                args += ["--split-policy", spec.split]
            if spec.split == "shuffled" and spec.split_seed != 42:
                args += ["--split-seed", str(spec.split_seed)]
        extra = list(generate_args or [])
        if not any(a == "--backend" or a.startswith("--backend=") for a in extra):
            args += ["--backend", "openai", "--model", "gpt-4o-mini"]
        if spec.checkpoint and not any(a.startswith("--clap-checkpoint") for a in extra):
            args += ["--clap-checkpoint", spec.checkpoint]
        args += extra + ["--tag", tag, *store]
    return shlex.join(args)


def _names(names: list[str], shown: int = 8) -> str:
    return ", ".join(map(repr, names[:shown])) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def base_classes(spec: BenchSpec, classes: list[str]) -> list[str]:
    from sept.splits import resolve_split

    return list(resolve_split(classes, spec.split, spec.split_seed).base)


def _dataset_classes(folder: Path) -> list[str]:
    from sept.trainer.data import read_csv

    return sorted({c for _, c, _ in read_csv(folder / "train.csv", folder)})


def resolve_neighbors(spec: BenchSpec, dataset: str, classes: list[str], arm: str,
                      on_ref: str | None = None, generate_args: list[str] | None = None
                      ) -> tuple[str | None, MissingNeighbors | None]:
    """(DATASET@<full id>, None) of the arm's version for `dataset`, or (None, what is missing).

    base2new: the version must be base-only (its visible_classes inside the base classes);
    cross: it may see the source's classes only."""
    from sept.neighbor_store import RefError, Store, StoreError

    tag = spec.neighbors if arm == "on" else spec.random_neighbors
    store = Store(spec.store)

    def missing(reason: str):
        return None, MissingNeighbors(dataset, arm, tag, reason,
                                      generate_command(spec, dataset, arm, tag, on_ref, generate_args))

    try:
        slug, vid = store.resolve(f"{dataset}@{tag}")
        version = store.read(f"{slug}@{vid}")
    except RefError:
        return missing(f"no version tagged {tag!r} in the store {store.root}")
    except StoreError as e:
        return missing(f"the version tagged {tag!r} cannot be read: {e}")
    from sept.splits import visible_classes_of

    visible = visible_classes_of(version.manifest)
    allowed = base_classes(spec, classes) if spec.protocol == "base2new" else list(classes)
    lacking = [c for c in allowed if c not in set(version.classes)]
    if lacking:
        whose = "base class(es)" if spec.protocol == "base2new" else "class(es) of the source"
        return missing(f"{slug}@{vid[:12]} has no neighbors for the {whose} {_names(lacking)}")
    seen = [c for c in visible if c not in set(allowed)]
    if seen:
        what = "new class(es)" if spec.protocol == "base2new" else "class(es) outside the source"
        return missing(f"{slug}@{vid[:12]} saw {what} {_names(seen)} (visible_classes); "
                       + ("a base-only version is needed" if spec.protocol == "base2new" else "it must see the source's classes only"))
    return f"{slug}@{vid}", None


def check_datasets(root: Path, names: list[str]) -> tuple[list[str], dict[str, Path]]:
    """(problems, folders) of these datasets: `sept data check` for the benchmark's datasets
    (layout, folds, class list, audio), a full read of the layout and audio for any other."""
    from sept.trainer.data import DataError, load_dataset
    from sept.trainer.data_check import check_root, load_benchmark

    known = load_benchmark()
    problems: list[str] = []
    folders: dict[str, Path] = {}
    for report in check_root(root, [n for n in names if n in known]):
        if not report.present:
            problems.append(f"{report.name}: absent from {root}")
            continue
        folders[report.name] = Path(report.folder)
        problems += [f"{report.name}: {p}" for p in report.problems]
    for name in names:
        if name in known:
            continue
        folder = root / name
        if not folder.is_dir():
            problems.append(f"{name}: absent from {root}")
            continue
        folders[name] = folder
        try:
            for fold in dataset_folds(folder) or [None]:
                load_dataset(folder, fold)
        except DataError as e:
            problems.append(f"{name}: {e}")
    return problems, folders


def present_benchmark_datasets(root: Path) -> list[str]:
    from sept.trainer.data_check import check_root

    return [r.name for r in check_root(root) if r.present]


def plan_bench(spec: BenchSpec, *, check_data: bool = True, generate_args: list[str] | None = None) -> Plan:
    """Every run of the bench with its resolved config and hash; what is missing, what is wrong."""
    root = Path(spec.datasets_root).expanduser().resolve()
    if not root.is_dir():
        raise BenchError(f"parameter 'datasets_root': folder not found: {root}")
    if spec.protocol == "base2new":
        names = list(spec.datasets) or present_benchmark_datasets(root)
        if not names:
            raise BenchError(f"no benchmark dataset under {root} (see `sept data check {root}`)")
    else:
        names = [spec.source, *spec.targets]
    if check_data:
        problems, folders = check_datasets(root, names)
    else:
        problems, folders = [], {n: root / n for n in names}
    plan = Plan(spec=spec, runs=[], datasets=names, problems=problems)
    if problems:
        return plan

    shared, scoped = parse_options(spec.options, spec.methods)
    out = Path(spec.out).expanduser().resolve()
    store = str(Path(spec.store).expanduser().resolve()) if spec.store else None
    trained = names if spec.protocol == "base2new" else [spec.source]
    targets = [str(folders[t]) for t in spec.targets] if spec.protocol == "cross" else []
    from sept.names import dataset_slug

    for dataset in trained:
        folder = folders[dataset]
        classes = _dataset_classes(folder)
        refs: dict[str, str | None] = {"off": None}
        for arm in ("on", "random"):
            if arm in spec.sept:
                ref, missing = resolve_neighbors(spec, dataset, classes, arm, refs.get("on"), generate_args)
                if missing:
                    plan.missing.append(missing)
                else:
                    refs[arm] = ref
                    plan.neighbors[(dataset, arm)] = ref
        folds = select_folds(spec.folds, dataset_folds(folder), dataset)
        for method in spec.methods:
            for arm in spec.sept:
                if arm != "off" and refs.get(arm) is None:
                    continue
                for fold in folds:
                    for seed in spec.seeds:
                        # the bench's flags < options for every run < options for this method
                        values: dict[str, Any] = {k: v for k, v in (("checkpoint", spec.checkpoint), ("store", store))
                                                  if v}
                        values.update({**shared, **scoped.get(method, {}),
                                       "dataset_root": str(folder), "method": method, "seed": seed,
                                       "fold": fold, "neighbors": refs[arm], "out_dir": str(out / "runs")})
                        if spec.protocol == "base2new":
                            values["base_to_new"] = True
                            for key, value in (("split", spec.split), ("split_seed", spec.split_seed)):
                                if key in TrainConfig.model_fields:
                                    values[key] = value
                        else:
                            values["targets"] = targets
                        try:
                            cfg = make_config(overrides=values)
                        except ConfigError as e:
                            raise BenchError(f"{dataset} {method}: {e}") from None
                        digest = config_hash(cfg)
                        parts = [dataset_slug(dataset), method, arm] + ([f"fold{fold}"] if fold is not None else [])
                        name = "-".join(parts + [f"seed{seed}", digest[:8]])
                        cfg = cfg.replace(run_name=name)
                        plan.runs.append(PlannedRun(name, dataset, fold, method, arm, seed, cfg.to_dict(), digest))
    return plan


# --------------------------------------------------------------------------- records

@dataclass
class RunRecord:
    """One run's row of runs.csv: where it stands and its figures (fractions, as in results.json)."""

    name: str
    dataset: str
    fold: int | None
    method: str
    arm: str
    seed: int
    config_hash: str
    status: str                        # trained | skipped | failed | pending
    run_dir: str
    base: float | None = None
    new: float | None = None
    H: float | None = None
    accuracy: float | None = None      # cross: the source's own test split
    transfer: dict[str, float] = field(default_factory=dict)
    seconds: float | None = None
    started: float | None = None
    ended: float | None = None
    worker: str = ""
    clap_loads: int | None = None
    error: str = ""


def load_record(run: PlannedRun, status: str | None = None, error: str = "") -> RunRecord:
    """The run's record from its folder (results.json, sweep.json); figures None when absent."""
    rec = RunRecord(run.name, run.dataset, run.fold, run.method, run.arm, run.seed, run.config_hash,
                    status or ("skipped" if run.done() else "pending"), str(run.run_dir), error=error)
    if status != "failed" and run.done():
        results = json.loads((run.run_dir / RESULTS).read_text(encoding="utf-8"))
        metrics = results.get("metrics", {})
        if "base" in metrics:
            rec.base, rec.new = metrics["base"]["accuracy"], metrics["new"]["accuracy"]
            rec.H = metrics.get("H", harmonic_mean(rec.base, rec.new))
        if "all" in metrics:
            rec.accuracy = metrics["all"]["accuracy"]
        rec.transfer = {k: v["accuracy"] for k, v in results.get("transfer", {}).items()}
        rec.seconds = results.get("seconds")
    info_path = run.run_dir / SWEEP_INFO
    if info_path.is_file():
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
            if info.get("config_hash") == run.config_hash:
                rec.started, rec.ended = info.get("started"), info.get("ended")
                rec.worker, rec.clap_loads = info.get("worker", ""), info.get("clap_loads")
        except ValueError:
            pass
    return rec


def write_json(path: Path, data: Any) -> None:
    _atomic_write(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def write_sweep_info(run_dir: Path, info: dict[str, Any]) -> None:
    write_json(run_dir / SWEEP_INFO, info)


# --------------------------------------------------------------------------- aggregation

@dataclass
class Cell:
    """Base-to-new figures of one (dataset, method, arm), in percent."""

    base: float
    base_std: float
    new: float
    new_std: float
    H: float                 # from the means
    n: int                   # runs (folds x seeds)


@dataclass
class Row:
    method: str
    arm: str
    cells: dict[str, Any]                       # dataset (or target) -> Cell / AccuracyCell
    average: dict[str, float] = field(default_factory=dict)
    n_datasets: int = 0

    @property
    def label(self) -> str:
        return row_label(self.method, self.arm)

    @property
    def published(self) -> tuple[float, float, float] | None:
        return PUBLISHED.get((self.method, self.arm))


@dataclass
class AccuracyCell:
    accuracy: float
    std: float
    n: int


@dataclass
class Table:
    protocol: str
    columns: list[str]          # datasets (base2new) or [source, *targets] (cross)
    rows: list[Row]


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), (float(arr.std(ddof=1)) if arr.size > 1 else 0.0)


def _row_order(records: list[RunRecord], methods: list[str] | None, arms: list[str] | None) -> list[tuple[str, str]]:
    methods = methods or list(dict.fromkeys(r.method for r in records))
    arms = arms or [a for a in ARMS if any(r.arm == a for r in records)]
    return [(m, a) for m in methods for a in arms]


def aggregate_base2new(records: list[RunRecord], datasets: list[str], methods: list[str] | None = None,
                       arms: list[str] | None = None) -> Table:
    """Rows (method, arm) x dataset cells; averages over the datasets that have a cell."""
    rows = []
    for method, arm in _row_order(records, methods, arms):
        cells: dict[str, Any] = {}
        for d in datasets:
            got = [r for r in records if (r.method, r.arm, r.dataset) == (method, arm, d) and r.base is not None]
            if not got:
                continue
            base, base_std = _mean_std([100 * r.base for r in got])
            new, new_std = _mean_std([100 * r.new for r in got])
            cells[d] = Cell(base, base_std, new, new_std, harmonic_mean(base, new), len(got))
        row = Row(method, arm, cells, n_datasets=len(cells))
        if cells:
            b = float(np.mean([c.base for c in cells.values()]))
            n = float(np.mean([c.new for c in cells.values()]))
            row.average = {"base": b, "new": n, "H": float(np.mean([c.H for c in cells.values()])),
                           "H_of_means": harmonic_mean(b, n)}
        rows.append(row)
    return Table("base2new", list(datasets), rows)


def aggregate_cross(records: list[RunRecord], source: str, targets: list[str], methods: list[str] | None = None,
                    arms: list[str] | None = None) -> Table:
    """Rows (method, arm) x [source, *targets] accuracy cells; average over the targets."""
    rows = []
    for method, arm in _row_order(records, methods, arms):
        got = [r for r in records if (r.method, r.arm) == (method, arm) and r.accuracy is not None]
        cells: dict[str, Any] = {}
        if got:
            acc, std = _mean_std([100 * r.accuracy for r in got])
            cells[source] = AccuracyCell(acc, std, len(got))
        for t in targets:
            values = [100 * r.transfer[t] for r in got if t in r.transfer]
            if values:
                acc, std = _mean_std(values)
                cells[t] = AccuracyCell(acc, std, len(values))
        row = Row(method, arm, cells, n_datasets=sum(t in cells for t in targets))
        if row.n_datasets:
            row.average = {"accuracy": float(np.mean([cells[t].accuracy for t in targets if t in cells]))}
        rows.append(row)
    return Table("cross", [source, *targets], rows)


# --------------------------------------------------------------------------- outputs

def _atomic_write(path: Path, text: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(text.encode("utf-8") if isinstance(text, str) else text)
    os.replace(tmp, path)


RUN_COLUMNS = ("run", "dataset", "fold", "method", "arm", "seed", "config_hash", "status", "base", "new", "H",
               "accuracy", "transfer", "seconds", "started", "ended", "worker", "clap_loads", "error", "run_dir")


def runs_csv(records: list[RunRecord]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(RUN_COLUMNS)
    pct = lambda v: "" if v is None else f"{100 * v:.4f}"   # noqa: E731
    for r in records:
        w.writerow([r.name, r.dataset, "" if r.fold is None else r.fold, r.method, r.arm, r.seed, r.config_hash,
                    r.status, pct(r.base), pct(r.new), pct(r.H), pct(r.accuracy),
                    json.dumps({k: round(100 * v, 4) for k, v in r.transfer.items()}) if r.transfer else "",
                    "" if r.seconds is None else f"{r.seconds:.2f}",
                    "" if r.started is None else f"{r.started:.3f}", "" if r.ended is None else f"{r.ended:.3f}",
                    r.worker, "" if r.clap_loads is None else r.clap_loads, r.error, r.run_dir])
    return buf.getvalue()


def _f(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def table_csv(table: Table) -> str:
    """One row per table row; numbers in percent, full precision."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if table.protocol == "base2new":
        head = ["row", "method", "arm"]
        for d in table.columns:
            head += [f"{d}/base", f"{d}/base_std", f"{d}/new", f"{d}/new_std", f"{d}/H", f"{d}/n"]
        head += ["avg/base", "avg/new", "avg/H", "avg/H_of_means", "avg/datasets",
                 "paper/base", "paper/new", "paper/H"]
        w.writerow(head)
        for row in table.rows:
            line: list[Any] = [row.label, row.method, row.arm]
            for d in table.columns:
                c = row.cells.get(d)
                line += ([c.base, c.base_std, c.new, c.new_std, c.H, c.n] if c else [""] * 6)
            a = row.average
            line += [a.get("base", ""), a.get("new", ""), a.get("H", ""), a.get("H_of_means", ""), row.n_datasets]
            line += list(row.published) if row.published else ["", "", ""]
            w.writerow(line)
    else:
        head = ["row", "method", "arm"]
        for d in table.columns:
            head += [f"{d}/accuracy", f"{d}/std", f"{d}/n"]
        head += ["avg/accuracy", "avg/targets"]
        w.writerow(head)
        for row in table.rows:
            line = [row.label, row.method, row.arm]
            for d in table.columns:
                c = row.cells.get(d)
                line += [c.accuracy, c.std, c.n] if c else ["", "", ""]
            line += [row.average.get("accuracy", ""), row.n_datasets]
            w.writerow(line)
    return buf.getvalue()


def table_md(table: Table, failures: int = 0) -> str:
    """The paper's layout in Markdown, with the SEPT paper's published averages beside ours."""
    lines: list[str] = []
    if table.protocol == "base2new":
        head = ["Method"]
        for d in table.columns:
            head += [f"{d} Base", f"{d} New", f"{d} H"]
        head += ["Avg Base", "Avg New", "Avg H", "H of avg ¹", "SEPT paper Base / New / H ²"]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(head) - 2) + ["---"]) + "|")
        for row in table.rows:
            line = [row.label]
            for d in table.columns:
                c = row.cells.get(d)
                line += ([f"{c.base:.2f} ± {c.base_std:.2f}", f"{c.new:.2f} ± {c.new_std:.2f}", f"{c.H:.2f}"]
                         if c else ["–"] * 3)
            a = row.average
            short = row.n_datasets < len(table.columns)
            mark = " *" if short and a else ""
            line += [_f(a.get("base")) + mark, _f(a.get("new")) + mark, _f(a.get("H")) + mark,
                     _f(a.get("H_of_means")) + mark]
            p = row.published
            line.append(f"{p[0]:.2f} / {p[1]:.2f} / {p[2]:.2f}" if p else "")
            lines.append("| " + " | ".join(line) + " |")
        lines += [
            "",
            "Base and New: mean ± sample std over folds x seeds, in percent; H per dataset from those means.",
            "Avg: mean over datasets of the per-dataset Base, New and H (the SEPT paper's convention).",
            "¹ H of the average Base and New (the CoOp paper's convention).",
            f"² the SEPT paper's published average over its 11 datasets; ours covers {len(table.columns)}.",
        ]
        if any(r.average and r.n_datasets < len(table.columns) for r in table.rows):
            lines.append("* average over fewer datasets than the table's columns (some runs failed or are missing).")
    else:
        source, targets = table.columns[0], table.columns[1:]
        head = ["Method", f"{source} (source)"] + targets + ["Avg (targets)"]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|")
        for row in table.rows:
            line = [row.label]
            for d in table.columns:
                c = row.cells.get(d)
                line.append(f"{c.accuracy:.2f} ± {c.std:.2f}" if c else "–")
            line.append(_f(row.average.get("accuracy")))
            lines.append("| " + " | ".join(line) + " |")
        lines += ["", "Accuracy in percent, mean ± sample std over folds x seeds; trained on the source's "
                      "classes, evaluated on each target without training."]
    if failures:
        lines.append(f"\n{failures} run(s) failed; see summary.json and runs.csv.")
    return "\n".join(lines) + "\n"


def write_plots(table: Table, folder: Path) -> list[Path]:
    """plots/*.png: figures per dataset and row, and SEPT's gain per method (arm minus off)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    rows = [r for r in table.rows if r.cells]
    if not rows:
        return written

    def save(fig, name: str) -> None:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        _atomic_write(folder / name, buf.getvalue())
        written.append(folder / name)

    def bars(ax, groups: list[str], series: list[tuple[str, list[float | None]]], ylabel: str) -> None:
        x = np.arange(len(groups))
        width = 0.8 / max(len(series), 1)
        for i, (label, values) in enumerate(series):
            ax.bar(x + (i - (len(series) - 1) / 2) * width,
                   [np.nan if v is None else v for v in values], width, label=label)
        ax.set_xticks(x, groups, rotation=30, ha="right")
        ax.set_ylabel(ylabel)
        ax.axhline(0, color="black", linewidth=0.6)

    if table.protocol == "base2new":
        groups = table.columns + ["Average"]
        fig, axes = plt.subplots(3, 1, figsize=(max(6, 1.1 * len(groups) * max(1, len(rows)) / 2), 9), sharex=True,
                                 layout="constrained")
        for ax, key, title in zip(axes, ("base", "new", "H"), ("Base", "New", "H")):
            series = [(r.label, [getattr(r.cells[d], key) if d in r.cells else None for d in table.columns]
                       + [r.average.get(key)]) for r in rows]
            bars(ax, groups, series, f"{title} (%)")
            ax.set_title(title)
        axes[0].legend(fontsize=7, ncol=2)
        save(fig, "base_new_h.png")
        keys, titles = ("new", "H"), ("New gain", "H gain")
    else:
        groups = table.columns + ["Average"]
        fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(groups)), 4), layout="constrained")
        series = [(r.label, [r.cells[d].accuracy if d in r.cells else None for d in table.columns]
                   + [r.average.get("accuracy")]) for r in rows]
        bars(ax, groups, series, "accuracy (%)")
        ax.set_title(f"trained on {table.columns[0]}")
        ax.legend(fontsize=7)
        save(fig, "cross_accuracy.png")
        keys, titles = ("accuracy",), ("Accuracy gain",)

    # SEPT's gain: each arm minus the same method's "off" row
    by = {(r.method, r.arm): r for r in rows}
    pairs = [(by[(m, a)], by[(m, "off")]) for (m, a) in by if a != "off" and (m, "off") in by]
    if pairs:
        fig, axes = plt.subplots(len(keys), 1, figsize=(max(6, 1.1 * len(groups)), 3.5 * len(keys)), squeeze=False,
                                 layout="constrained")
        for ax, key, title in zip(axes[:, 0], keys, titles):
            series = []
            for arm_row, off in pairs:
                values: list[float | None] = []
                for d in table.columns:
                    a, o = arm_row.cells.get(d), off.cells.get(d)
                    values.append(getattr(a, key) - getattr(o, key) if a and o else None)
                aa, oa = arm_row.average.get(key), off.average.get(key)
                values.append(aa - oa if aa is not None and oa is not None else None)
                series.append((f"{arm_row.label} − {off.label}", values))
            bars(ax, groups, series, f"{title} (points)")
            ax.set_title(title)
        axes[0, 0].legend(fontsize=7)
        save(fig, "sept_gain.png")
    return written


def build_table(plan: Plan, records: list[RunRecord]) -> Table:
    spec = plan.spec
    if spec.protocol == "base2new":
        return aggregate_base2new(records, plan.datasets, spec.methods, spec.sept)
    return aggregate_cross(records, spec.source, list(spec.targets), spec.methods, spec.sept)


def write_outputs(plan: Plan, records: list[RunRecord]) -> dict[str, Any]:
    """runs.csv, table.md, table.csv and plots/ in the bench folder; returns the table."""
    out = plan.out
    table = build_table(plan, records)
    failures = sum(r.status == "failed" for r in records)
    _atomic_write(out / "runs.csv", runs_csv(records))
    _atomic_write(out / "table.csv", table_csv(table))
    _atomic_write(out / "table.md", table_md(table, failures))
    plots = write_plots(table, out / "plots")
    return {"table": table, "files": [str(out / n) for n in ("runs.csv", "table.md", "table.csv")]
            + [str(p) for p in plots]}
