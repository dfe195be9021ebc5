"""`sept generate` and `sept margins compute`: the pipeline from the command line.

Heavy imports (torch, laion-clap, sentence-transformers, LLM clients) happen inside the
commands, so `sept --help` stays fast.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

margins_app = typer.Typer(help="Margins of a neighbor version under a CLAP text encoder.", no_args_is_help=True)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _known_errors() -> tuple[type[BaseException], ...]:
    from pydantic import ValidationError

    errors: list[type[BaseException]] = [ValidationError, ValueError, FileNotFoundError, KeyError, OSError]
    try:
        from sept.neighbor_store import StoreError

        errors.append(StoreError)
    except ImportError:
        pass
    try:
        from sept.pipeline.generate import GenerationError

        errors.append(GenerationError)
    except ImportError:
        pass
    return tuple(errors)


def _message(e: BaseException) -> str:
    from pydantic import ValidationError

    from sept.pipeline.run import config_error_text

    if isinstance(e, ValidationError):
        return config_error_text(e)
    if isinstance(e, KeyError) and e.args:
        return str(e.args[0])
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def generate(
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Dataset name (bundled lists: esc50, tut2017, ... or any name with --classes-file / --dataset-root); not with --backend random-words, which takes it from --like."),
    classes_file: Optional[Path] = typer.Option(None, "--classes-file", help="Text file, one class per line."),
    dataset_root: Optional[Path] = typer.Option(None, "--dataset-root", help="PALM-layout root (<root>/<dataset>/train.csv) or the dataset folder."),
    split: Optional[str] = typer.Option(None, "--split", help="Make neighbors for one part of a base/new split only: base | new | all. The LLM prompts, CLAP filter and audio check then see only those classes."),
    split_policy: str = typer.Option("sorted", "--split-policy", help="How --split divides the classes: sorted | shuffled | file:PATH (JSON {\"base\": [...], \"new\": [...]})."),
    split_seed: int = typer.Option(42, "--split-seed", help="Seed of the shuffled split policy."),
    visible_classes: Optional[Path] = typer.Option(None, "--visible-classes", help="Text file, one class per line: make neighbors for these classes only, seeing no other."),
    backend: str = typer.Option(..., "--backend", help="openai | anthropic | vllm | vllm-offline, or random-words (the control: no LLM, see --like)"),
    model: Optional[str] = typer.Option(None, "--model", help="LLM name (or local path for vllm-offline); not for random-words."),
    like: Optional[str] = typer.Option(None, "--like", help="random-words: DATASET@REF whose classes, visible classes and neighbors per class the new version copies."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed (random-words: the seed of the random texts)."),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="OpenAI-compatible server URL (required for vllm)."),
    clap_checkpoint: Optional[Path] = typer.Option(None, "--clap-checkpoint", help="LAION-CLAP checkpoint; without it the CLAP filter and margins are skipped."),
    clap_amodel: str = typer.Option("HTSAT-tiny", "--clap-amodel", help="CLAP audio model of the checkpoint."),
    clap_fusion: bool = typer.Option(False, "--clap-fusion", help="The checkpoint is a fusion model."),
    clap_tokenizer: Optional[Path] = typer.Option(None, "--clap-tokenizer", help="Folder with the RoBERTa vocab.json and merges.txt."),
    n_per_class: int = typer.Option(10, "--n-per-class", help="Neighbors to ask for per class."),
    samples: int = typer.Option(1, "--samples", help="Independent LLM samples per class."),
    prompt: str = typer.Option("default", "--prompt", help="Prompt id (default, synonyms, acoustic, subtypes) or a .yaml path."),
    templates: str = typer.Option("default", "--templates", help="Manual template set id or .yaml path."),
    temperature: float = typer.Option(0.8, "--temperature"),
    dedup_threshold: float = typer.Option(0.85, "--dedup-threshold", help="Dedup: phrase cosine a word substitution needs to make a duplicate; the content-key rule's floor follows it (see sept.pipeline.dedup)."),
    dedup_model: Optional[str] = typer.Option(None, "--dedup-model", help="sentence-transformers model name or path (default: the shipped all-MiniLM-L6-v2)."),
    min_self: float = typer.Option(0.5, "--min-self", help="CLAP filter: minimum cosine to the own class."),
    confuser_margin: float = typer.Option(0.0, "--confuser-margin", help="CLAP filter: reject when another class is closer by more than this."),
    audio_clips: int = typer.Option(0, "--audio-clips", help="CLAP filter: score neighbors against this many training clips per class (needs --dataset-root)."),
    min_audio_self: Optional[float] = typer.Option(None, "--min-audio-self", help="CLAP filter: reject neighbors whose cosine to their class's clips is below this."),
    tag: Optional[str] = typer.Option(None, "--tag", help="Tag the new version."),
    store: Optional[Path] = typer.Option(None, "--store", help="Store root (default $SEPT_STORE or ./neighbor-store)."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="LLM response cache folder (default $SEPT_CACHE/llm or ./.sept/llm-cache); a re-run costs no request."),
    concurrency: int = typer.Option(8, "--concurrency", help="Concurrent LLM requests."),
    max_attempts: int = typer.Option(4, "--max-attempts", help="Attempts per request before a class fails."),
    message: str = typer.Option("", "--message", "-m", help="Version message."),
) -> None:
    """Generate, clean and score neighbors for every class, and write one new version.

    Prints the new version reference last on stdout.
    """
    from pydantic import ValidationError

    from sept.pipeline.run import PipelineConfig, config_error_text

    if backend == "random-words":
        if like is None:
            _fail("--backend random-words needs --like DATASET@REF (the version whose shape it copies)")
        if dataset is not None or model is not None:
            _fail("--backend random-words takes the dataset from --like and uses no model: drop --dataset/--model")
        _random_words(like=like, seed=seed, clap_checkpoint=clap_checkpoint, clap_amodel=clap_amodel,
                      clap_fusion=clap_fusion, clap_tokenizer=clap_tokenizer, templates=templates, tag=tag,
                      store=store, message=message)
        return
    if like is not None:
        _fail("--like is for --backend random-words")
    if dataset is None:
        _fail("--dataset is required")
    if model is None:
        _fail("--model is required")
    if classes_file is not None and dataset_root is not None:
        _fail("give either --classes-file or --dataset-root, not both")
    try:
        cfg = PipelineConfig(
            dataset=dataset, classes_file=classes_file, dataset_root=dataset_root, split=split,
            split_policy=split_policy, split_seed=split_seed, visible_classes_file=visible_classes,
            backend=backend, model=model,
            base_url=base_url, clap_checkpoint=clap_checkpoint, clap_amodel=clap_amodel, clap_fusion=clap_fusion,
            clap_tokenizer=clap_tokenizer, n_per_class=n_per_class, samples=samples, prompt=prompt,
            templates=templates, temperature=temperature, dedup_threshold=dedup_threshold,
            dedup_model=dedup_model, min_self=min_self, confuser_margin=confuser_margin,
            audio_clips_per_class=audio_clips, min_audio_self=min_audio_self, tag=tag, store=store,
            cache_dir=cache_dir, concurrency=concurrency, max_attempts=max_attempts, message=message, seed=seed,
        )
    except ValidationError as e:
        _fail(config_error_text(e))
    _generate(cfg)


def _random_words(**options) -> None:
    """`sept generate --backend random-words`: the random-word twin of a version, written like any other."""
    from rich.console import Console

    from sept.neighbor_store import Store
    from sept.pipeline.random_words import RandomWordsConfig, make_random_version
    from sept.pipeline.run import write_result

    console = Console(stderr=True)
    try:
        cfg = RandomWordsConfig(**options)
        store = Store(cfg.store)
        result, cfg = make_random_version(cfg, store)
        ref = write_result(store, cfg, result)
    except _known_errors() as e:
        _fail(_message(e))
    console.print(f"{len(result.classes)} classes, {len(result.neighbors)} random-word neighbors "
                  f"(like {result.params['like']['ref']}, seed {cfg.seed}); no LLM requests")
    if result.margins is None:
        console.print("margins skipped: no --clap-checkpoint")
    else:
        console.print(f"margins {tuple(result.margins[1].shape)} under encoder {result.margins[0]}")
    typer.echo(ref)


def _generate(cfg) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from sept.neighbor_store import Store
    from sept.pipeline.datasets import resolve_classes
    from sept.pipeline.run import run_pipeline, write_result

    console = Console(stderr=True)
    try:
        classes = resolve_classes(cfg)
        if cfg.split or cfg.visible_classes_file:
            how = f"split {cfg.split} ({cfg.split_policy})" if cfg.split else f"--visible-classes {cfg.visible_classes_file}"
            console.print(f"{how}: {len(classes)} classes visible")
        # the store is opened before any LLM request so a bad --store fails fast
        store = Store(cfg.store)
        with Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[last]}"), console=console, transient=False,
        ) as progress:
            task = progress.add_task(f"{cfg.dataset}: classes", total=len(classes), last="")

            def on_class_done(*args, **kwargs) -> None:
                result = args[-1] if args else next(iter(kwargs.values()), None)
                name = getattr(result, "class_name", result if isinstance(result, str) else "")
                got = getattr(result, "candidates", None)
                last = f"{name} ({len(got)} candidates)" if got is not None else str(name)
                progress.update(task, advance=1, last=last)

            # cfg as given: the pipeline resolves the visible classes from the dataset's own list
            result = run_pipeline(cfg, on_class_done=on_class_done)
            progress.update(task, completed=len(classes))
        ref = write_result(store, cfg, result)
    except _known_errors() as e:
        _fail(_message(e))
    stats = result.stats
    kept = sum(s["kept"] for s in stats["classes"].values())
    console.print(
        f"{len(result.classes)} classes, {kept} neighbors kept, {len(result.rejected)} rejected; "
        f"{stats['requests']} LLM requests, {stats['cache_hits']} cache hits"
    )
    from sept.neighbor_store.cost import format_cost

    for cost in stats.get("cost", []):
        console.print(f"cost: {format_cost(cost)}")
    if result.margins is None:
        console.print("CLAP filter and margins skipped: no --clap-checkpoint")
    else:
        console.print(f"margins {tuple(result.margins[1].shape)} under encoder {result.margins[0]}")
    typer.echo(ref)


@margins_app.command("compute")
def margins_compute(
    ref: str = typer.Argument(..., help="Version reference DATASET@VERSION."),
    clap_checkpoint: Path = typer.Option(..., "--clap-checkpoint", help="LAION-CLAP checkpoint."),
    templates: str = typer.Option("default", "--templates", help="Manual template set id or .yaml path."),
    clap_amodel: str = typer.Option("HTSAT-tiny", "--clap-amodel"),
    clap_fusion: bool = typer.Option(False, "--clap-fusion"),
    clap_tokenizer: Optional[Path] = typer.Option(None, "--clap-tokenizer", help="Folder with the RoBERTa vocab.json and merges.txt."),
    store: Optional[Path] = typer.Option(None, "--store", help="Store root (default $SEPT_STORE or ./neighbor-store)."),
) -> None:
    """Compute margins of an existing version and attach them under the encoder fingerprint."""
    try:
        if not clap_checkpoint.is_file():
            raise FileNotFoundError(f"--clap-checkpoint: {clap_checkpoint} does not exist")
        from sept.neighbor_store import Store
        from sept.pipeline.margins import compute_margins
        from sept.clap import get_backbone
        from sept.pipeline.run import attach_margins
        from sept.prompts import load_templates

        st = Store(store)
        version = st.read(ref)
        template_set = load_templates(templates)
        backbone = get_backbone(clap_checkpoint, clap_amodel, clap_fusion, clap_tokenizer)
        values = compute_margins(backbone, list(version.classes), list(version.neighbors), template_set)
        attach_margins(st, version.ref, backbone.fingerprint, values, [n.id for n in version.neighbors],
                       meta={"templates": template_set.ref})
    except _known_errors() as e:
        _fail(_message(e))
    typer.echo(f"{version.ref} margins {backbone.fingerprint} shape {list(values.shape)}")


def register(app: typer.Typer) -> None:
    """Add `sept generate` and `sept margins ...` to the `sept` app."""
    app.command("generate")(generate)
    app.add_typer(margins_app, name="margins")
