"""Command-line verbs of this part: `sept stack up|down|status|env` and `sept demo`."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

stack_app = typer.Typer(help="The local Prefect stack (server, work pool, deployments, worker, optional vLLM).",
                        no_args_is_help=True)

_DIR = typer.Option(None, "--dir", help="State folder of the stack [default: <repo>/.sept/stack].")
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
    tiny_llm: bool = typer.Option(False, "--tiny-llm", help="Serve the repo's tiny stand-in LLM (built once; its neighbors are not meaningful)."),
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


def register(app: typer.Typer) -> None:
    """Add this part's verbs to the `sept` app."""
    app.add_typer(stack_app, name="stack")
    app.command("demo")(demo)
