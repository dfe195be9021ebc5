"""Planning a bench: every (dataset, fold, method, SEPT arm, seed) -> a resolved TrainConfig and its hash.

A run's `method` is the token of the identity its resolved config runs (`sept.sweeps.spec.MethodId`:
base method, DePT, audio prompt, recipe), so rows and runs.csv name what ran, options included.

    plan = plan_bench(spec)        # runs, and what stops the bench: data problems, missing versions
    todo = [r for r in plan.runs if not r.done()]

A run is identified by the hash of its resolved config (`sept.trainer.config.config_hash`, which
leaves out the fields that only say where outputs go): a run whose results.json holds a config
with the same hash is done and never redone, so a bench resumes. A run's name is
<dataset-slug>-<method slug>-<arm>[-fold<k>]-seed<s>-<8 hex of the hash> (method slug: `coop`,
`dept-coop`, `coop-aspl`, `kgcoop-reference`, ...).

With `fewshot_dir`, each run trains on its dataset x fold x seed file of `sept data fewshot`
(`with_fewshot_file`); the file's content, not its path, is part of the run's hash.

Each SEPT arm needs a neighbor version per dataset (the "on" arm's tag, the "random" arm's tag);
one that is absent or does not serve the runs (`sept.neighbor_store.serving`) is listed in
`plan.missing` with the `sept generate` command that makes it, and that arm's runs are left out.
"""
from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sept.names import dataset_slug
from sept.splits import Split, SplitError, resolve_split
from sept.sweeps.records import RESULTS
from sept.sweeps.spec import BenchError, BenchSpec, MethodId, parse_options, row_label, scoped_options
from sept.trainer.config import ConfigError, TrainConfig, config_hash, make_config
from sept.trainer.data import DataError
from sept.trainer.fewshot import chosen_folds, dataset_folds      # as `sept data fewshot` reads them


@dataclass
class PlannedRun:
    """One run of the grid: its place in the grid, its resolved config (a TrainConfig dict) and hash."""

    name: str
    dataset: str
    fold: int | None
    method: str                 # MethodId token of the config: coop, dept:coop, coop+aspl, kgcoop@reference
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

    @property
    def identity(self) -> MethodId:
        return MethodId.from_config(self.config)

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
    """A neighbor version an arm needs for a dataset and lacks: why, and the command that makes it."""

    dataset: str
    arm: str
    tag: str
    reason: str
    command: str


@dataclass
class Plan:
    """The runs of a spec and what stops the bench from starting (`ok` is False while anything does)."""

    spec: BenchSpec
    runs: list[PlannedRun]
    datasets: list[str]                       # base2new: evaluated datasets; cross: [source, *targets]
    missing: list[MissingNeighbors] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)   # data check
    neighbors: dict[tuple[str, str], str] = field(default_factory=dict)   # (dataset, arm) -> DATASET@id
    methods: list[str] = field(default_factory=list)    # the rows' method tokens, in the spec's order

    def method_order(self) -> list[str]:
        """The rows' method tokens: as planned, else those the spec's entries name."""
        return self.methods or list(dict.fromkeys(ident.token for _, ident in self.spec.method_ids()))

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


def select_folds(spec_folds: str, available: list[int], dataset: str) -> list[int | None]:
    """--folds all | K | k1,k2 against a dataset's folds.

    K takes each dataset's first min(K, folds) folds, so one bench spans datasets with 5 folds and
    with 1; a dataset without fold files (one train.csv/test.csv) runs once, fold None."""
    try:
        return chosen_folds(spec_folds, available, dataset, what="parameter 'folds'")
    except DataError as e:
        raise BenchError(str(e)) from None


def generate_command(spec: BenchSpec, dataset: str, arm: str, tag: str, on_ref: str | None,
                     generate_args: list[str] | None = None) -> str:
    """The `sept generate` command that makes the version an arm needs for a dataset."""
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


def bench_split(spec: BenchSpec, classes: list[str], dataset: str) -> Split | None:
    """The base/new split a dataset's runs train under (None in the cross protocol)."""
    if spec.protocol != "base2new":
        return None
    try:
        return resolve_split(classes, spec.split, spec.split_seed, dataset=dataset)
    except SplitError as e:
        raise BenchError(f"parameter 'split': {e}") from None


def _dataset_classes(folder: Path) -> list[str]:
    from sept.trainer.data import read_csv

    return sorted({c for _, c, _ in read_csv(folder / "train.csv", folder)})


def resolve_neighbors(spec: BenchSpec, dataset: str, classes: list[str], arm: str,
                      on_ref: str | None = None, generate_args: list[str] | None = None
                      ) -> tuple[str | None, MissingNeighbors | None]:
    """(DATASET@<full id>, None) of the arm's version for `dataset`, or (None, what is missing).

    The version must serve the runs as `sept train` will check it (`sept.neighbor_store.serving`):
    base2new trains the base classes, so it must be base-only (hold them and have seen no new
    class); cross trains all of the source's classes and may have seen those only."""
    from sept.neighbor_store import RefError, Store, StoreError
    from sept.neighbor_store.serving import serving

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
    split = bench_split(spec, classes, dataset)
    refusal = serving(version, classes, split.base if split is not None else classes).refusal(split)
    if refusal:
        return missing(refusal)
    return f"{slug}@{vid}", None


def check_datasets(root: Path, names: list[str]) -> tuple[list[str], dict[str, Path]]:
    """(problems, folders) of these datasets: `sept data check` for the benchmark's datasets
    (layout, folds, class list, audio), a full read of the layout and audio for any other."""
    from sept.trainer.data import load_dataset
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


def with_fewshot_file(cfg: TrainConfig, fewshot_dir: str, folder: Path, fold: int | None, seed: int) -> TrainConfig:
    """The run's config trained on its few-shot file from `sept data fewshot --out fewshot_dir`
    (<dir>/<dataset folder>/fold<k>_shots<K>_seed<s>.json); a missing file stops the bench, named."""
    from sept.trainer.fewshot import fewshot_path

    path = fewshot_path(Path(fewshot_dir).expanduser().resolve(), folder.name, fold, cfg.shots, seed)
    if not path.is_file():
        raise BenchError(f"parameter 'fewshot_dir': no few-shot file {path} (make them with "
                         f"`sept data fewshot {folder.parent} --shots {cfg.shots} --seeds {seed} --out {fewshot_dir}`)")
    return cfg.replace(fewshot_file=str(path))


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
    ran_by: dict[str, str] = {}        # method token -> the methods entry that runs it

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
        for entry, given_identity in spec.method_ids():
            for arm in spec.sept:
                if arm != "off" and refs.get(arm) is None:
                    continue
                for fold in folds:
                    for seed in spec.seeds:
                        # the bench's flags < options for every run < options for this method
                        values: dict[str, Any] = {k: v for k, v in (("checkpoint", spec.checkpoint), ("store", store))
                                                  if v}
                        # the entry's identity < options: `dept=true` for every run still names its rows
                        values.update({**given_identity.overrides(), **shared, **scoped_options(scoped, entry),
                                       "dataset_root": str(folder), "seed": seed,
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
                            raise BenchError(f"{dataset} {entry}: {e}") from None
                        identity = MethodId.from_config(cfg.to_dict())
                        other = ran_by.setdefault(identity.token, entry)
                        if other != entry:
                            raise BenchError(f"methods {other!r} and {entry!r} both run {identity.label} "
                                             "(with the bench's options)")
                        if spec.fewshot_dir:
                            cfg = with_fewshot_file(cfg, spec.fewshot_dir, folder, fold, seed)
                        digest = config_hash(cfg)
                        parts = [dataset_slug(dataset), identity.slug, arm] + ([f"fold{fold}"] if fold is not None else [])
                        name = "-".join(parts + [f"seed{seed}", digest[:8]])
                        cfg = cfg.replace(run_name=name)
                        plan.runs.append(PlannedRun(name, dataset, fold, identity.token, arm, seed, cfg.to_dict(),
                                                    digest))
    # entry order; an entry whose every arm lacks neighbors still has the identity it asks for
    tokens = {entry: token for token, entry in ran_by.items()}
    plan.methods = list(dict.fromkeys(tokens.get(entry, ident.token) for entry, ident in spec.method_ids()))
    return plan
