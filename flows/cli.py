"""Command-line verbs of this part: `sept stack up|down|status|env`, `sept demo` and `sept bench base2new|cross`."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer

stack_app = typer.Typer(help="The local Prefect stack (server, work pool, deployments, worker, optional vLLM).",
                        no_args_is_help=True)

_DIR = typer.Option(None, "--dir", help="State folder of the stack [default: $SEPT_HOME/stack, SEPT_HOME defaulting to ./.sept].")
_PORT = typer.Option(4200, "--port", help="Port of the Prefect server (loopback).")


def _config(dir: Optional[Path], **kw):
    from sept.flows.stack import StackConfig

    if dir is not None:
        kw["root"] = dir
    return StackConfig(**{k: v for k, v in kw.items() if v is not None})


def _print_status(status: dict) -> None:
    typer.echo(f"stack {status['root']}: {'up' if status['up'] else 'DOWN'} ({status['api_url']})")
    for name, part in status["parts"].items():
        state = "healthy" if part["healthy"] else ("running, not healthy" if part["alive"] else "stopped")
        typer.echo(f"  {name:<7} pid {part['pid']:<8} {state:<22} log {part['log']}")


@stack_app.command("up")
def stack_up(
    dir: Optional[Path] = _DIR,
    port: int = _PORT,
    pool: str = typer.Option("sept", "--pool", help="Name of the process work pool."),
    vllm_model: Optional[Path] = typer.Option(None, "--vllm-model", help="Serve this model folder with a local vLLM server."),
    tiny_llm: bool = typer.Option(False, "--tiny-llm", help="Serve sept's tiny stand-in LLM (sept.tiny_llm, built once; its neighbors are not meaningful)."),
    vllm_port: int = typer.Option(8000, "--vllm-port", help="Port of the local vLLM server."),
    vllm_url: Optional[str] = typer.Option(None, "--vllm-url", help="Use this running OpenAI-compatible server (…/v1) instead."),
    served_model: Optional[str] = typer.Option(None, "--served-model", help="Model name the vLLM server serves."),
    clap_checkpoint: Optional[Path] = typer.Option(None, "--clap-checkpoint", help="CLAP checkpoint the deployments use."),
    clap_tokenizer: Optional[Path] = typer.Option(None, "--clap-tokenizer", help="RoBERTa tokenizer folder."),
    store: Optional[Path] = typer.Option(None, "--store", help="Neighbor store root the deployments write to."),
    llm_limit: int = typer.Option(8, "--llm-limit", help="Slots of each llm-<backend> concurrency limit."),
    note: str = typer.Option("", "--note", help="Manifest message of runs of the deployments."),
    timeout: float = typer.Option(180.0, "--timeout", help="Seconds to wait for each part."),
) -> None:
    """Bring the stack up; a healthy stack is left as it is."""
    from sept.flows.stack import Stack, StackError

    try:
        if tiny_llm:
            from sept.flows.demo import TINY_LLM_NAME, DemoError, build_tiny_llm

            if vllm_model is not None or vllm_url:
                raise StackError("--tiny-llm serves the stand-in model: leave out --vllm-model and --vllm-url")
            try:
                vllm_model = build_tiny_llm(lambda m: typer.echo(m, err=True))
            except DemoError as e:
                raise StackError(str(e)) from None
            served_model = served_model or TINY_LLM_NAME
            note = note or "served by the tiny stand-in LLM: these neighbors are NOT meaningful"
        cfg = _config(dir, port=port, pool=pool, vllm_model=vllm_model, vllm_port=vllm_port, vllm_base_url=vllm_url,
                      vllm_served_model=served_model, clap_checkpoint=clap_checkpoint, clap_tokenizer=clap_tokenizer,
                      store=store, llm_limit=llm_limit, note=note, timeout=timeout)
        stack = Stack(cfg, log=lambda m: typer.echo(m, err=True))
        status = stack.up()
    except StackError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1)
    _print_status(status)
    typer.echo(f"\npoint the prefect CLI at it:  source {cfg.root / 'env.sh'}")
    typer.echo("then:  prefect deployment run 'generate-neighbors/vllm-local' --param dataset=esc50 --watch")


@stack_app.command("down")
def stack_down(dir: Optional[Path] = _DIR) -> None:
    """Stop what `stack up` started, and nothing else."""
    from sept.flows.stack import Stack

    stack = Stack(_config(dir), log=lambda m: typer.echo(m, err=True))
    stopped = stack.down()
    typer.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@stack_app.command("status")
def stack_status(
    dir: Optional[Path] = _DIR,
    as_json: bool = typer.Option(False, "--json", help="Print the status as JSON."),
) -> None:
    """Show each part, its pid, health and log; exit 1 when the stack is not up."""
    from sept.flows.stack import Stack

    status = Stack(_config(dir)).status()
    if as_json:
        typer.echo(json.dumps(status, indent=2))
    else:
        _print_status(status)
    if not status["up"]:
        raise typer.Exit(1)


@stack_app.command("env")
def stack_env(dir: Optional[Path] = _DIR) -> None:
    """Print the `export` lines that point the prefect CLI at the stack."""
    from sept.flows.stack import Stack

    env_file = Stack(_config(dir)).root / "env.sh"
    if not env_file.exists():
        typer.echo(f"error: {env_file} does not exist; run `sept stack up` first", err=True)
        raise typer.Exit(1)
    typer.echo(env_file.read_text(), nl=False)


def demo(
    dir: Optional[Path] = _DIR,
    port: int = _PORT,
    vllm_port: int = typer.Option(8000, "--vllm-port", help="Port of the local vLLM server."),
    dataset: str = typer.Option("esc50", "--dataset", help="Bundled class list to generate neighbors for."),
    timeout: float = typer.Option(1800.0, "--timeout", help="Seconds the generation run may take."),
) -> None:
    """Bring the stack up and generate neighbors for ESC-50's 50 classes through Prefect."""
    from sept.flows.demo import DemoError, run_demo

    try:
        run_demo(root=dir, port=port, vllm_port=vllm_port, dataset=dataset, timeout=timeout)
    except DemoError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1)


# ---------------------------------------------------------------------------------- sept bench

bench_app = typer.Typer(
    help="The paper's benchmark as one command: every (dataset, fold, method, SEPT arm, seed) a task of the "
         "Prefect flow train-sweep; runs.csv, table.md, table.csv and plots/ in --out.",
    no_args_is_help=True)

_B_ROOT = typer.Option(..., "--datasets-root", help="Folder holding the datasets in PALM layout (<root>/<Dataset>/train.csv).")
_B_CKPT = typer.Option("", "--checkpoint", help="LAION-CLAP checkpoint every run uses.")
_B_METHODS = typer.Option("coop", "--methods", help="Comma-separated methods, each [dept:]METHOD[+aspl|+aspl+][@RECIPE]: "
                                                    "coop, cocoop, kgcoop, palm, dept:coop, coop+aspl, kgcoop@reference, ...")
_B_RECIPE = typer.Option("palm", "--recipe", help="Optimizer settings of the methods without @RECIPE: palm (PALM's, "
                                                  "the default) or reference (each method's own paper's).")
_B_ARMS = typer.Option("off,on", "--sept", help="Comma-separated arms: off (no neighbors), on (--neighbors), "
                                                "random (the --random-neighbors versions, a control).")
_B_NEIGHBORS = typer.Option(None, "--neighbors", help="Tag of each dataset's neighbor version for the 'on' arm "
                                                      "(base2new: a base-only version).")
_B_RANDOM = typer.Option("random", "--random-neighbors", help="Tag of each dataset's version for the 'random' arm.")
_B_SEEDS = typer.Option("1", "--seeds", help="Comma-separated seeds.")
_B_FOLDS = typer.Option("all", "--folds", help="all, K (each dataset's first K folds) or k1,k2 (those folds).")
_B_OUT = typer.Option(None, "--out", help="Bench folder (default: bench/<protocol>).")
_B_STORE = typer.Option(None, "--store", help="Neighbor store root (default $SEPT_STORE or ./neighbor-store).")
_B_FEWSHOT = typer.Option(None, "--fewshot-dir", help="Folder of `sept data fewshot --out`: each run trains on its "
                                                      "<Dataset>/fold<k>_shots<K>_seed<s>.json (sha256 in runs.csv).")
_B_RUNNER = typer.Option("threads", "--task-runner", help="threads (one run per visible GPU at a time, 1 on the CPU) or ray.")
_B_RAY = typer.Option(None, "--ray-address", help="Address of a running Ray cluster (default: a local one).")
_B_RAY_WORKERS = typer.Option(2, "--ray-workers", help="CPUs (= concurrent runs) of the local Ray cluster.")
_B_GPUS = typer.Option(None, "--num-gpus", help="GPUs per Ray task, fractional allowed (default: 1 with a GPU, else 0).")
_B_DRY = typer.Option(False, "--dry-run", help="List the runs and which are done; train nothing.")
_B_GEN = typer.Option(False, "--generate", help="Make the missing neighbor versions first (runs the listed `sept generate` commands).")
_B_GEN_ARGS = typer.Option(None, "--generate-arg", help="Extra argument for each `sept generate` (repeatable), e.g. --generate-arg=--backend=vllm.")
_B_QUIET = typer.Option(False, "--quiet", "-q", help="No progress bars.")
_B_OPTIONS = typer.Argument(None, help="Training options for every run as key=value (METHOD.key=value: that method only).")


def _bench(protocol: str, given: dict, out: Optional[Path], store: Optional[Path], task_runner: str,
           ray_address: Optional[str], ray_workers: int, num_gpus: Optional[float], dry_run: bool, generate: bool,
           generate_args: Optional[list[str]], quiet: bool) -> None:
    from sept.sweeps import BenchError, plan_bench, spec_from

    values = {k: v for k, v in given.items() if v is not None}
    values.update(protocol=protocol, out=str(out or Path("bench") / protocol))
    if store is not None:
        values["store"] = str(store)
    try:
        spec = spec_from(values)
        plan = plan_bench(spec, generate_args=list(generate_args or []))
        if plan.missing and generate and not plan.problems:
            plan = _generate_missing(spec, plan, list(generate_args or []))
    except BenchError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1)
    if dry_run and not plan.problems:
        _print_plan(plan)
    if not plan.ok:
        typer.echo(f"error: the bench cannot start\n{plan.describe_problems()}", err=True)
        if plan.missing:
            typer.echo("make them with the commands above, or run the bench with --generate", err=True)
        raise typer.Exit(1)
    if dry_run:
        return
    _run_bench(spec, plan, task_runner, ray_address, ray_workers, num_gpus, quiet)


def _generate_missing(spec, plan, generate_args: list[str]):
    """Run the `sept generate` command of each missing version ('on' arm first: a 'random' version
    is made like the 'on' one), re-planning after each arm; returns the new plan."""
    import shlex
    import subprocess
    import sys

    from sept.sweeps import plan_bench

    for arm in ("on", "random"):
        for missing in [m for m in plan.missing if m.arm == arm]:
            typer.echo(f"generating {missing.dataset} ({arm} arm): {missing.command}", err=True)
            cmd = shlex.split(missing.command)
            res = subprocess.run([sys.executable, "-m", "sept", *cmd[1:]])
            if res.returncode != 0:
                typer.echo(f"error: `{missing.command}` failed (exit {res.returncode}); nothing was trained", err=True)
                raise typer.Exit(1)
        plan = plan_bench(spec, generate_args=generate_args)
    return plan


def _print_plan(plan) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{plan.spec.protocol}: {len(plan.runs)} runs in {plan.out}")
    for col in ("run", "dataset", "fold", "method", "arm", "seed", "config hash", "state"):
        table.add_column(col)
    done = 0
    for run in plan.runs:
        is_done = run.done()
        done += is_done
        table.add_row(run.name, run.dataset, "" if run.fold is None else str(run.fold), run.method, run.arm,
                      str(run.seed), run.config_hash, "done" if is_done else "to train")
    Console(width=200).print(table)
    typer.echo(f"{done} of {len(plan.runs)} runs done, {len(plan.runs) - done} to train")


def _run_bench(spec, plan, task_runner: str, ray_address: Optional[str], ray_workers: int, num_gpus: Optional[float],
               quiet: bool) -> None:
    from sept.flows import sweep_tasks
    from sept.flows.params import ParameterError
    from sept.flows.sweep import SUMMARY, SweepFailed, require_server, train_sweep

    try:
        require_server(task_runner)
    except ParameterError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1)
    # Without a server the flow runs on Prefect's ephemeral one, whose 20 s start-up limit a busy
    # machine can miss (a new SQLite database and migrations); a user's own setting wins.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    params = spec.model_dump()
    params.update(task_runner=task_runner, ray_address=ray_address, ray_workers=ray_workers, num_gpus=num_gpus,
                  check_data=False)   # checked just now by plan_bench
    failed = None
    progress = display = None
    if not quiet:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        runs_planned = plan.runs
        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            TextColumn("{task.fields[info]}"))
        runs = progress.add_task("runs", total=len(runs_planned), completed=sum(r.done() for r in runs_planned),
                                 info="")
        display = sweep_tasks.SweepProgress(progress, runs)
        progress.start()
    try:
        with sweep_tasks.sweep_display(display):
            train_sweep(**params)
    except SweepFailed as e:
        failed = e
    except ParameterError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1)
    finally:
        if progress is not None:
            progress.stop()
    out = Path(spec.out)
    summary = json.loads((out / SUMMARY).read_text(encoding="utf-8"))
    typer.echo((out / "table.md").read_text(encoding="utf-8"))
    loads = summary["clap_loads_per_worker"]
    typer.echo(f"{summary['runs']} runs: {summary['trained']} trained, {summary['skipped']} done before, "
               f"{len(summary['failed'])} failed"
               + (f"; CLAP loads per worker: {', '.join(f'{w} {n}' for w, n in loads.items())}" if loads else ""))
    for f in summary["failed"]:
        typer.echo(f"FAILED {f['run']}: {f['reason']}", err=True)
    typer.echo(f"outputs: {', '.join(summary['files'])}")
    if failed is not None:
        raise typer.Exit(1)


@bench_app.command("base2new")
def bench_base2new(
    overrides: Optional[list[str]] = _B_OPTIONS,
    datasets_root: Path = _B_ROOT,
    checkpoint: str = _B_CKPT,
    methods: str = _B_METHODS,
    recipe: str = _B_RECIPE,
    sept: str = _B_ARMS,
    neighbors: Optional[str] = _B_NEIGHBORS,
    random_neighbors: str = _B_RANDOM,
    seeds: str = _B_SEEDS,
    datasets: Optional[str] = typer.Option(None, "--datasets", help="Comma-separated datasets (default: every benchmark dataset present)."),
    folds: str = _B_FOLDS,
    split: str = typer.Option("sorted", "--split", help="Base/new split: sorted, shuffled, zebra (ZEBRA's published lists) or file:PATH."),
    split_seed: int = typer.Option(42, "--split-seed", help="Seed of the shuffled split."),
    out: Optional[Path] = _B_OUT,
    store: Optional[Path] = _B_STORE,
    fewshot_dir: Optional[Path] = _B_FEWSHOT,
    task_runner: str = _B_RUNNER,
    ray_address: Optional[str] = _B_RAY,
    ray_workers: int = _B_RAY_WORKERS,
    num_gpus: Optional[float] = _B_GPUS,
    dry_run: bool = _B_DRY,
    generate: bool = _B_GEN,
    generate_arg: Optional[list[str]] = _B_GEN_ARGS,
    quiet: bool = _B_QUIET,
) -> None:
    """Base-to-new: train on each dataset's base classes, report Base / New / H beside the SEPT paper's."""
    given = dict(datasets_root=str(datasets_root), checkpoint=checkpoint, methods=methods, recipe=recipe, sept=sept,
                 neighbors=neighbors, random_neighbors=random_neighbors, seeds=seeds, datasets=datasets or "",
                 folds=folds, split=split, split_seed=split_seed, options=list(overrides or []))
    given["fewshot_dir"] = str(fewshot_dir) if fewshot_dir is not None else None
    _bench("base2new", given, out, store, task_runner, ray_address, ray_workers, num_gpus, dry_run, generate,
           generate_arg, quiet)


@bench_app.command("cross")
def bench_cross(
    overrides: Optional[list[str]] = _B_OPTIONS,
    datasets_root: Path = _B_ROOT,
    source: str = typer.Option(..., "--source", help="Dataset trained on (all its classes)."),
    targets: str = typer.Option(..., "--targets", help="Comma-separated datasets evaluated without training."),
    checkpoint: str = _B_CKPT,
    methods: str = _B_METHODS,
    recipe: str = _B_RECIPE,
    sept: str = _B_ARMS,
    neighbors: Optional[str] = _B_NEIGHBORS,
    random_neighbors: str = _B_RANDOM,
    seeds: str = _B_SEEDS,
    folds: str = _B_FOLDS,
    out: Optional[Path] = _B_OUT,
    store: Optional[Path] = _B_STORE,
    fewshot_dir: Optional[Path] = _B_FEWSHOT,
    task_runner: str = _B_RUNNER,
    ray_address: Optional[str] = _B_RAY,
    ray_workers: int = _B_RAY_WORKERS,
    num_gpus: Optional[float] = _B_GPUS,
    dry_run: bool = _B_DRY,
    generate: bool = _B_GEN,
    generate_arg: Optional[list[str]] = _B_GEN_ARGS,
    quiet: bool = _B_QUIET,
) -> None:
    """Cross-dataset: train on all classes of --source, evaluate on each target; accuracy per target."""
    given = dict(datasets_root=str(datasets_root), source=source, targets=targets, checkpoint=checkpoint,
                 methods=methods, recipe=recipe, sept=sept, neighbors=neighbors, random_neighbors=random_neighbors, seeds=seeds,
                 folds=folds, options=list(overrides or []))
    given["fewshot_dir"] = str(fewshot_dir) if fewshot_dir is not None else None
    _bench("cross", given, out, store, task_runner, ray_address, ray_workers, num_gpus, dry_run, generate,
           generate_arg, quiet)


def register(app: typer.Typer) -> None:
    """Add this part's verbs to the `sept` app."""
    app.add_typer(stack_app, name="stack")
    app.add_typer(bench_app, name="bench")
    app.command("demo")(demo)
