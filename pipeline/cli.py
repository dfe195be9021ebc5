"""`sept generate` and `sept margins compute`: the pipeline from the command line.

Heavy imports (torch, laion-clap, sentence-transformers, LLM clients) happen inside the
commands, so `sept --help` stays fast.
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Optional

import typer
from pydantic import ValidationError

margins_app = typer.Typer(help="Margins of a neighbor version under a CLAP text encoder.", no_args_is_help=True)


# The options of `sept generate` are PipelineConfig's fields (sept.pipeline.run.config_fields):
# `--` and the field name with dashes, its default and its help. Only these keep an older name.
FLAGS = {
    "visible_classes_file": ("--visible-classes",),
    "audio_clips_per_class": ("--audio-clips",),
    "message": ("--message", "-m"),
}
# Required in PipelineConfig, optional here: `--backend random-words` takes the dataset from
# --like and uses no model; the command checks them for every other backend.
CHECKED_IN_COMMAND = ("dataset", "model")
# Options of the command that are not PipelineConfig fields.
RANDOM_WORDS_OPTIONS = ("like",)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def flags(name: str) -> tuple[str, ...]:
    """The command-line names of PipelineConfig field `name`."""
    return FLAGS.get(name, ("--" + name.replace("_", "-"),))


def _option_parameters() -> list[inspect.Parameter]:
    """`sept generate`'s parameters: every PipelineConfig field, then --like."""
    from sept.pipeline.run import config_fields

    params = []
    for f in config_fields():
        kind = list[str] if f.type == list[str] else f.type
        annotation = Optional[kind] if f.optional or f.required else kind
        if f.name == "backend":
            help_text = f.help.rstrip(".") + ", or random-words (the control: no LLM, see --like)."
            option = typer.Option(..., *flags(f.name), help=help_text)
        elif f.required:
            help_text = f.help + (" Not for --backend random-words." if f.name in CHECKED_IN_COMMAND else "")
            option = typer.Option(None, *flags(f.name), help=help_text)
        else:
            # a bool field is a flag (no --no-... form): its default is False
            option = typer.Option(f.default, *flags(f.name), help=f.help)
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                        annotation=str if f.name == "backend" else annotation))
    params.append(inspect.Parameter(
        "like", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[str],
        default=typer.Option(None, "--like", help="random-words: DATASET@REF whose classes, visible classes and "
                                                  "neighbors per class the new version copies.")))
    return params


def generate(**options) -> None:
    """Generate, clean and score neighbors for every class, and write one new version.

    Prints the new version reference last on stdout.
    """
    from sept.pipeline.run import config_from

    like = options.pop("like")
    if options["backend"] == "random-words":
        if like is None:
            _fail("--backend random-words needs --like DATASET@REF (the version whose shape it copies)")
        if options["dataset"] is not None or options["model"] is not None:
            _fail("--backend random-words takes the dataset from --like and uses no model: drop --dataset/--model")
        from sept.pipeline.random_words import RandomWordsConfig

        _random_words(like=like, **{k: v for k, v in options.items()
                                    if k in RandomWordsConfig.model_fields and k != "dataset"})
        return
    if like is not None:
        _fail("--like is for --backend random-words")
    for name in CHECKED_IN_COMMAND:
        if options[name] is None:
            _fail(f"{flags(name)[0]} is required")
    if options["classes_file"] is not None and options["dataset_root"] is not None:
        _fail("give either --classes-file or --dataset-root, not both")
    _generate(config_from(options))


generate.__signature__ = inspect.Signature(_option_parameters(), return_annotation=None)
generate.__annotations__ = {p.name: p.annotation for p in generate.__signature__.parameters.values()}


def _random_words(**options) -> None:
    """`sept generate --backend random-words`: the random-word twin of a version, written like any other."""
    from rich.console import Console

    from sept.neighbor_store import Store
    from sept.pipeline.random_words import RandomWordsConfig, make_random_version
    from sept.pipeline.run import config_error_text, write_result

    console = Console(stderr=True)
    try:
        cfg = RandomWordsConfig(**options)
    except ValidationError as e:
        _fail(config_error_text(e))
    store = Store(cfg.store)
    result, cfg = make_random_version(cfg, store)
    ref = write_result(store, cfg, result)
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
    from sept.neighbor_store.cost import format_cost
    from sept.pipeline.run import resolve_inputs, run_pipeline, write_result

    console = Console(stderr=True)
    classes, _, _ = resolve_inputs(cfg)
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
    stats = result.stats
    console.print(
        f"{len(result.classes)} classes, {stats['kept']} neighbors kept, {len(result.rejected)} rejected; "
        f"{stats['requests']} LLM requests, {stats['response_cache_hits']} cache hits"
    )
    for cost in stats.get("cost", []):
        console.print(f"cost: {format_cost(cost)}")
    if result.margins is None:
        console.print("CLAP filter and margins skipped: no --clap-checkpoint")
    else:
        console.print(f"margins {tuple(result.margins[1].shape)} under encoder {result.margins[0]}")
    typer.echo(ref)


def _field_option(name: str, *names: str):
    """A typer option with PipelineConfig field `name`'s default and help."""
    from sept.pipeline.run import PipelineConfig

    info = PipelineConfig.model_fields[name]
    return typer.Option(info.default, *(names or flags(name)), help=info.description)


@margins_app.command("compute")
def margins_compute(
    ref: str = typer.Argument(..., help="Version reference DATASET@VERSION."),
    clap_checkpoint: Path = typer.Option(..., "--clap-checkpoint", help="LAION-CLAP checkpoint."),
    templates: str = _field_option("templates"),
    clap_amodel: str = _field_option("clap_amodel"),
    clap_fusion: bool = _field_option("clap_fusion"),
    clap_tokenizer: Optional[Path] = _field_option("clap_tokenizer"),
    trust_checkpoint: bool = _field_option("trust_checkpoint"),
    store: Optional[Path] = _field_option("store"),
) -> None:
    """Compute margins of an existing version and attach them under the encoder fingerprint."""
    from sept.clap import get_backbone
    from sept.neighbor_store import Store
    from sept.pipeline.margins import compute_margins
    from sept.pipeline.run import ConfigError, attach_margins
    from sept.prompts import load_templates

    if not clap_checkpoint.is_file():
        _fail(f"--clap-checkpoint: {clap_checkpoint} does not exist")
    st = Store(store)
    version = st.read(ref)
    try:
        template_set = load_templates(templates)
    except (ValueError, OSError, KeyError) as e:
        raise ConfigError(f"--templates: {e.args[0] if isinstance(e, KeyError) and e.args else e}") from None
    backbone = get_backbone(clap_checkpoint, clap_amodel, clap_fusion, clap_tokenizer,
                            trust_checkpoint=trust_checkpoint)
    values = compute_margins(backbone, list(version.classes), list(version.neighbors), template_set)
    attach_margins(st, version.ref, backbone.fingerprint, values, [n.id for n in version.neighbors],
                   meta={"templates": template_set.ref})
    typer.echo(f"{version.ref} margins {backbone.fingerprint} shape {list(values.shape)}")


def register(app: typer.Typer) -> None:
    """Add `sept generate` and `sept margins ...` to the `sept` app."""
    app.command("generate")(generate)
    app.add_typer(margins_app, name="margins")
