"""`sept train` and `sept eval`: prompt tuning of CLAP from the command line.

    sept train --config run.yaml dataset_root=data/ESC50 method=palm epochs=10
    sept train --dataset-root data/ESC50 --checkpoint clap.pt --neighbors esc50@latest --seeds 0,1,2
    sept eval runs/esc50-coop-seed0 --target data/UrbanSound8K
    sept data fewshot data/ --shots 16 --seeds 1,2,3 --out fewshot/    (then fewshot_file=PATH)

Every `key=value` argument overrides the config field of that name (see trainer/config.py);
the flags are shortcuts for the common ones. Heavy imports happen inside the commands.
The trainer's errors (ConfigError, DataError, TrainError) and the store's and CLAP's are
SeptErrors: they propagate to the `sept` console script, which prints them in one line.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _print_results(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"run {results.get('run') or results.get('run_dir')}")
    table.add_column("split")
    table.add_column("accuracy", justify="right")
    table.add_column("macro-F1", justify="right")
    for split, m in results["metrics"].items():
        if isinstance(m, dict):
            table.add_row(split, f"{100 * m['accuracy']:.2f}", f"{100 * m['macro_f1']:.2f}")
        else:
            table.add_row(split, f"{100 * m:.2f}", "")
    for target, m in results.get("transfer", {}).items():
        table.add_row(f"-> {target}", f"{100 * m['accuracy']:.2f}", f"{100 * m['macro_f1']:.2f}")
    Console().print(table)


def train(
    overrides: Optional[List[str]] = typer.Argument(None, help="key=value config overrides (any field of the config)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config file."),
    dataset_root: Optional[str] = typer.Option(None, "--dataset-root", help="Dataset folder in PALM layout (train.csv, test.csv)."),
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint", help="LAION-CLAP checkpoint file."),
    method: Optional[str] = typer.Option(None, "--method", help="zeroshot | coop | cocoop | kgcoop | palm"),
    neighbors: Optional[str] = typer.Option(None, "--neighbors", help="Neighbor version DATASET@REF: adds the SEPT term."),
    fold: Optional[int] = typer.Option(None, "--fold", help="Use csv_files/train_<k>.csv and test_<k>.csv."),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="Comma-separated seeds: one run each plus a mean ± std summary."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run from its latest checkpoint."),
    stop_after: Optional[int] = typer.Option(None, "--stop-after", help="Stop after this many epochs (resume later)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    trust_checkpoint: bool = typer.Option(
        False, "--trust-checkpoint",
        help="Allow loading a pickled .pt CLAP checkpoint, which can run code; prefer `sept clap convert`."),
) -> None:
    """Train a prompt learner (optionally with SEPT) and evaluate it; writes results JSON per run."""
    from sept.trainer.config import make_config

    given = {k: v for k, v in dict(dataset_root=dataset_root, checkpoint=checkpoint, method=method,
                                   neighbors=neighbors, fold=fold).items() if v is not None}
    if trust_checkpoint:
        given["trust_checkpoint"] = "true"
    flags = [f"{k}={v}" for k, v in given.items()]
    cfg = make_config(config, list(overrides or []) + flags)
    from sept.trainer.train import train as train_run, train_seeds
    from sept.trainer.metrics import format_summary

    if seeds:
        try:
            seed_list = [int(s) for s in seeds.split(",") if s.strip()]
        except ValueError:
            _fail(f"--seeds must be comma-separated integers, got {seeds!r}")
        summary = train_seeds(cfg, seed_list, resume=resume, show_progress=not quiet)
        for line in format_summary(summary["summary"]):
            typer.echo(line)
        return
    results = train_run(cfg, resume=resume, stop_after=stop_after, show_progress=not quiet)
    if "stopped_at_epoch" in results:
        typer.echo(f"stopped after epoch {results['stopped_at_epoch']}; continue with --resume ({results['run_dir']})")
        return
    _print_results(results)
    typer.echo(f"results: {Path(results['run_dir']) / 'results.json'}")


def eval_(
    run_dir: Path = typer.Argument(..., help="Run folder written by sept train."),
    target: Optional[List[str]] = typer.Option(None, "--target", help="Dataset folder to evaluate on (cross-dataset); repeatable."),
    epoch: Optional[int] = typer.Option(None, "--epoch", help="Checkpoint epoch (default: the latest)."),
) -> None:
    """Evaluate a trained run on its test split(s) and on other datasets; writes <run>/eval.json."""
    from sept.trainer.train import evaluate_run

    results = evaluate_run(run_dir, targets=list(target or []), epoch=epoch)
    _print_results(results)
    typer.echo(f"results: {Path(run_dir) / 'eval.json'}")


data_app = typer.Typer(help="Benchmark datasets on disk.", no_args_is_help=True)


@data_app.command("check")
def data_check(
    root: Path = typer.Argument(..., metavar="DIR", help="Folder holding the datasets in PALM layout (DIR/ESC50/train.csv, ...)."),
    require: Optional[str] = typer.Option(None, "--require", help="Comma-separated datasets that must be present."),
    datasets: Optional[str] = typer.Option(None, "--datasets", help="Check only these (comma-separated; default: all 11)."),
) -> None:
    """Check layout, folds, class lists and audio of the 11 benchmark datasets under DIR; one table.

    Exits 1 when a present dataset has a problem or a --require'd one is absent.
    """
    from sept.trainer.data import DataError
    from sept.trainer.data_check import check_root, print_reports

    def names(text: Optional[str]) -> list[str]:
        return [n.strip() for n in (text or "").split(",") if n.strip()]

    required = names(require)
    try:
        chosen = names(datasets) or None
        if chosen is not None:
            chosen += [n for n in required if n not in chosen]
        reports = check_root(root, chosen)
    except DataError as e:
        _fail(str(e))
    print_reports(reports, root)
    broken = [r.name for r in reports if r.present and not r.ok]
    absent = [r.name for r in reports if not r.present and r.name in required]
    if broken:
        typer.echo(f"problems in: {', '.join(broken)}", err=True)
    if absent:
        typer.echo(f"required but absent: {', '.join(absent)}", err=True)
    if broken or absent:
        raise typer.Exit(1)


@data_app.command("split")
def data_split(
    dataset: str = typer.Argument(..., help="Dataset name (ESC50, TUT2017, ...; matched by its slug)."),
    dataset_root: Optional[Path] = typer.Option(None, "--dataset-root", help="Folder holding DATASET in PALM layout; "
                                                "its train.csv gives the classes. Default: the benchmark's class list."),
    policy: str = typer.Option("sorted", "--policy", help="sorted | shuffled | zebra | file:PATH."),
    seed: int = typer.Option(42, "--seed", help="Seed of the shuffled policy."),
    fold: Optional[int] = typer.Option(None, "--fold", help="Read the classes from csv_files/train_K.csv."),
    as_json: bool = typer.Option(False, "--json", help='Print {"base": [...], "new": [...]} only.'),
) -> None:
    """Print the base and new classes a split policy gives, before any GPU hour is spent on it."""
    import json

    from sept.names import dataset_slug
    from sept.splits import resolve_split
    from sept.trainer.data import DataError, load_dataset
    from sept.trainer.data_check import find_folder, load_benchmark

    if dataset_root is not None:
        folder = find_folder(dataset_root.expanduser(), dataset)
        if folder is None:
            raise DataError(f"--dataset-root {dataset_root}: no folder for dataset {dataset!r}")
        ds = load_dataset(folder, fold=fold, check_files=False)
        name, classes = ds.name, ds.classes
    else:
        known = {dataset_slug(n): n for n in load_benchmark()}
        name = known.get(dataset_slug(dataset))
        if name is None:
            raise DataError(f"dataset {dataset!r} is not one of the benchmark's datasets "
                            f"({', '.join(sorted(known.values()))}): give --dataset-root")
        classes = load_benchmark()[name]["classes"]
    split = resolve_split(classes, policy, seed, dataset=name)
    if as_json:
        typer.echo(json.dumps({"base": split.base, "new": split.new}, ensure_ascii=False, indent=2))
        return
    typer.echo(f"{name}: {len(split.base)} base, {len(split.new)} new (policy {policy}"
               + (f", seed {seed}" if split.seed is not None else "") + ")")
    typer.echo("base: " + ", ".join(split.base))
    typer.echo("new:  " + ", ".join(split.new))


@data_app.command("fewshot")
def data_fewshot(
    root: Path = typer.Argument(..., metavar="ROOT", help="Folder holding the datasets in PALM layout (ROOT/ESC50/train.csv, ...)."),
    out: Path = typer.Option(..., "--out", help="Folder to write OUT/<Dataset>/fold<k>_shots<K>_seed<s>.json into."),
    shots: int = typer.Option(16, "--shots", help="Clips per class (<= 0: every training clip)."),
    seeds: str = typer.Option("1", "--seeds", help="Comma-separated seeds: one file each."),
    folds: str = typer.Option("all", "--folds", help="all, K (each dataset's first K folds) or k1,k2, as sept bench reads it."),
    datasets: Optional[str] = typer.Option(None, "--datasets", help="Comma-separated datasets (default: every benchmark dataset present)."),
) -> None:
    """Write few-shot split files for a benchmark: the clips `sept train` draws for each dataset x fold x seed.

    Train on one with fewshot_file=PATH, or a whole bench with `sept bench --fewshot-dir OUT`.
    """
    from sept.trainer.data import DataError
    from sept.trainer.data_check import find_folder, load_benchmark
    from sept.trainer.fewshot import write_fewshot_files

    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise DataError(f"--seeds must be comma-separated integers, got {seeds!r}") from None
    if not seed_list:
        raise DataError("--seeds: give at least one seed")
    base = root.expanduser()
    if not base.is_dir():
        raise DataError(f"datasets root {base} is not a directory")
    wanted = [n.strip() for n in (datasets or "").split(",") if n.strip()]
    found = {n: find_folder(base, n) for n in (wanted or load_benchmark())}
    absent = [n for n in wanted if found[n] is None]
    if absent:
        raise DataError(f"--datasets: no folder under {base} for {', '.join(absent)}")
    names = [f.name for f in found.values() if f is not None]
    if not names:
        raise DataError(f"no benchmark dataset under {base} (see `sept data check {base}`); name them with --datasets")
    written = write_fewshot_files(base, out, shots, seed_list, names, folds)
    for path in written:
        typer.echo(str(path))
    typer.echo(f"{len(written)} few-shot file(s) in {out}")


@data_app.command("import")
def data_import(
    src: Path = typer.Argument(..., metavar="SRC", help="Folder of class subfolders (--from folder), metadata CSV (--from csv), "
                             "or datasets folder: save_to_disk or parquet files (--from hf)."),
    out: Path = typer.Option(..., "--out", help="The dataset folder to create, ROOT/NAME (must not exist)."),
    source: str = typer.Option(..., "--from", help="folder | csv | hf."),
    path_col: Optional[str] = typer.Option(None, "--path-col", help="CSV column of each clip's path."),
    label_col: Optional[str] = typer.Option(None, "--label-col", help="Column of each clip's class name "
                                            "(hf default: the one ClassLabel column)."),
    fold_col: Optional[str] = typer.Option(None, "--fold-col", help="Column of each clip's fold (1..K)."),
    audio_col: Optional[str] = typer.Option(None, "--audio-col", help="hf: the Audio column (default: the one there is)."),
    preset: Optional[str] = typer.Option(None, "--preset", help="esc50 | urbansound8k: that dataset's own metadata CSV."),
    audio_root: Optional[Path] = typer.Option(None, "--audio-root", help="Folder the CSV's paths are relative to "
                                              "(default: the CSV's folder)."),
    test_fraction: float = typer.Option(0.2, "--test-fraction", help="Without folds: the share of each class in test.csv."),
    seed: int = typer.Option(0, "--seed", help="Seed of the test-fraction draw."),
    copy: bool = typer.Option(False, "--copy", help="Copy the audio instead of symlinking it."),
) -> None:
    """Import a dataset into PALM's layout at --out, then check it; a refused import leaves nothing there."""
    from sept.trainer.data import DataError
    from sept.trainer.importing import collect_csv, collect_folder, import_dataset, import_hf

    if source != "hf" and audio_col is not None:
        raise DataError("--audio-col applies to --from hf only")
    if source == "hf":
        if any(v is not None for v in (path_col, preset, audio_root)):
            raise DataError("--from hf takes no --path-col/--preset/--audio-root")
        result = import_hf(src, out, audio_col=audio_col, label_col=label_col, fold_col=fold_col, copy=copy,
                           test_fraction=test_fraction, seed=seed)
    elif source == "folder":
        if any(v is not None for v in (path_col, label_col, fold_col, preset, audio_root)):
            raise DataError("--from folder takes no --path-col/--label-col/--fold-col/--preset/--audio-root")
        clips = collect_folder(src)
    elif source == "csv":
        clips = collect_csv(src, path_col, label_col, fold_col, audio_root, preset)
    else:
        raise DataError(f"--from {source!r}: expected folder, csv or hf")
    if source != "hf":
        result = import_dataset(clips, out, copy=copy, test_fraction=test_fraction, seed=seed)
    layout = f"{result.folds} folds in csv_files/" if result.folds else "train.csv/test.csv"
    typer.echo(f"{result.out}: {len(result.classes)} classes, {result.clips} clips, {layout}; data check passed")


def register(app: typer.Typer) -> None:
    """Add `sept train`, `sept eval` and `sept data check|split|fewshot|import` to the `sept` app."""
    app.command("train", context_settings={"allow_extra_args": False})(train)
    app.command("eval")(eval_)
    app.add_typer(data_app, name="data")
