"""`sept demo` (`make demo`): the stack up, then the generate-neighbors deployment for a
bundled class list (ESC-50's 50 classes) through the exact user command

    prefect deployment run 'generate-neighbors/<name>' --param dataset=esc50 --watch

Models, best first:
- OPENAI_API_KEY or ANTHROPIC_API_KEY set: that hosted API (deployment `openai` / `anthropic`);
- else a small instruct model already in the local Hugging Face cache, served by local vLLM;
- else, when the Hugging Face hub answers, that small instruct model downloaded once into the cache;
- else (offline) the stand-ins: the tiny LLM of sept.tiny_llm served by local vLLM.
CLAP: the official LAION-CLAP checkpoint (630k-audioset-best.pt) from $SEPT_CLAP_CHECKPOINT or
the local Hugging Face cache with the roberta-base tokenizer, else downloaded when the hub answers,
else a random-weight CLAP. HF_HUB_OFFLINE=1 forbids every download. With a stand-in the output and
the manifest message say plainly that the neighbors are not meaningful.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from sept.errors import SeptError
from sept.flows.stack import Stack, StackConfig, StackError

# small chat models worth serving on a CPU, smallest first
SMALL_INSTRUCT_MODELS = (
    "Qwen/Qwen2.5-0.5B-Instruct",
    "HuggingFaceTB/SmolLM2-360M-Instruct",
    "Qwen/Qwen2.5-1.5B-Instruct",
    "HuggingFaceTB/SmolLM2-1.7B-Instruct",
)
CLAP_REPO = "lukewys/laion_clap"
CLAP_FILE = "630k-audioset-best.pt"  # HTSAT-tiny, no fusion: the backbone's defaults
ROBERTA_REPO = "FacebookAI/roberta-base"  # only its tokenizer files: CLAP checkpoints hold the weights
TINY_LLM_NAME = "sept-tiny-llm"
HUB_PROBE_TIMEOUT = 5.0
BUILD_TIMEOUT = 1800.0


class DemoError(SeptError, RuntimeError):
    """The demo could not run; the message says why and what to do."""


@dataclass
class DemoModels:
    deployment: str                 # generate-neighbors/<deployment>
    llm: str                        # what answers, for the output
    vllm_model: Path | None = None  # served locally
    served_name: str | None = None
    clap_checkpoint: Path | None = None
    clap_tokenizer: Path | None = None
    stand_ins: tuple[str, ...] = ()

    @property
    def note(self) -> str:
        if not self.stand_ins:
            return ""
        return (f"DEMO WITH STAND-IN MODELS ({', '.join(self.stand_ins)}): no hosted LLM key and no real model "
                f"in the local cache. The pipeline, store and review steps are real, but these neighbors "
                f"are NOT meaningful.")


def _hf_hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    return home / "hub"


def _cached_snapshot(repo_id: str, required: str) -> Path | None:
    snapshots = _hf_hub_cache() / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    for snap in sorted(snapshots.glob("*"), reverse=True) if snapshots.is_dir() else []:
        if (snap / required).exists():
            return snap
    return None


def find_local_instruct_model() -> tuple[str, Path] | None:
    """(repo id, folder) of a small instruct model in the local HF cache, or None."""
    for repo in SMALL_INSTRUCT_MODELS:
        snap = _cached_snapshot(repo, "config.json")
        if snap is not None and any(snap.glob("*.safetensors")):
            return repo, snap
    return None


def find_official_clap() -> tuple[Path, Path | None] | None:
    """(checkpoint, tokenizer folder or None for the backbone's own lookup) when the
    official checkpoint and the roberta-base tokenizer are both on this machine."""
    ckpt = Path(os.environ["SEPT_CLAP_CHECKPOINT"]) if os.environ.get("SEPT_CLAP_CHECKPOINT") else None
    if ckpt is None or not ckpt.is_file():
        snap = _cached_snapshot(CLAP_REPO, CLAP_FILE)
        ckpt = snap / CLAP_FILE if snap is not None else None
    if ckpt is None:
        return None
    try:
        from sept.clap import find_tokenizer_dir

        return ckpt.resolve(), find_tokenizer_dir(None)
    except Exception:  # no tokenizer: the official checkpoint is unusable offline
        return None


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT) -> bool:
    """Whether the Hugging Face hub answers within `timeout` s; never tried when HF_HUB_OFFLINE is set."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() not in ("", "0", "false", "no"):
        return False
    import httpx

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    try:
        response = httpx.head(f"{endpoint}/api/models/{CLAP_REPO}", timeout=timeout, follow_redirects=True)
    except httpx.HTTPError:
        return False
    return response.status_code < 500


def download_instruct_model(log: Callable[[str], None]) -> tuple[str, Path] | None:
    """Download the smallest instruct model of SMALL_INSTRUCT_MODELS into the HF cache (once)."""
    from huggingface_hub import snapshot_download

    repo = SMALL_INSTRUCT_MODELS[0]
    log(f"downloading {repo} into the Hugging Face cache (once) ...")
    try:
        snap = snapshot_download(repo, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja"])
    except Exception as e:  # any hub failure: fall back to the stand-in, saying why
        log(f"could not download {repo}: {type(e).__name__}: {e}")
        return None
    return repo, Path(snap)


def download_official_clap(log: Callable[[str], None]) -> tuple[Path, Path] | None:
    """Download the official CLAP checkpoint and the roberta-base tokenizer files (once)."""
    from huggingface_hub import hf_hub_download

    log(f"downloading {CLAP_REPO}/{CLAP_FILE} and the roberta-base tokenizer into the Hugging Face cache (once) ...")
    try:
        ckpt = Path(hf_hub_download(CLAP_REPO, CLAP_FILE))
        vocab = Path(hf_hub_download(ROBERTA_REPO, "vocab.json"))
        hf_hub_download(ROBERTA_REPO, "merges.txt")
    except Exception as e:
        log(f"could not download the CLAP checkpoint: {type(e).__name__}: {e}")
        return None
    return ckpt, vocab.parent


def build_tiny_llm(log: Callable[[str], None]) -> Path:
    """The tiny stand-in LLM folder (`python -m sept.tiny_llm --cached`), built once (cached by
    content hash under $SEPT_CACHE or $SEPT_HOME)."""
    log("building the tiny stand-in LLM (once; a few minutes on a CPU) ...")
    # in a child process: training it here would leave torch threads and memory behind
    cmd = [sys.executable, "-m", "sept.tiny_llm", "--cached"]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise DemoError(f"building the tiny LLM took more than {BUILD_TIMEOUT:.0f} s: {shlex.join(cmd)}") from None
    lines = [ln for ln in res.stdout.strip().splitlines() if ln.strip()]
    if res.returncode != 0 or not lines or not Path(lines[-1]).is_dir():
        raise DemoError(f"building the tiny LLM failed (exit {res.returncode}): {shlex.join(cmd)}\n{res.stderr[-2000:]}")
    return Path(lines[-1])


def build_tiny_clap(folder: Path, log: Callable[[str], None]) -> tuple[Path, Path]:
    """A random-weight CLAP checkpoint and a stand-in tokenizer under `folder`, written once."""
    ckpt, tok = folder / "clap-random.pt", folder / "tokenizer"
    if not ckpt.is_file() or not (tok / "vocab.json").is_file():
        log("writing a random-weight CLAP checkpoint and tokenizer (once) ...")
        from sept.clap.tiny import write_random_checkpoint, write_tokenizer

        folder.mkdir(parents=True, exist_ok=True)
        write_tokenizer(tok)
        write_random_checkpoint(ckpt)
    return ckpt, tok


def choose_models(work: Path, log: Callable[[str], None]) -> DemoModels:
    if os.environ.get("OPENAI_API_KEY"):
        models = DemoModels(deployment="openai", llm="OpenAI API")
    elif os.environ.get("ANTHROPIC_API_KEY"):
        models = DemoModels(deployment="anthropic", llm="Anthropic API")
    else:
        found = find_local_instruct_model()
        if found is None and hub_reachable():
            found = download_instruct_model(log)
        if found is not None:
            repo, snap = found
            models = DemoModels(deployment="vllm-local", llm=f"{repo} on local vLLM", vllm_model=snap, served_name=repo)
        else:
            models = DemoModels(deployment="vllm-local", llm="tiny stand-in LLM on local vLLM",
                                vllm_model=build_tiny_llm(log), served_name=TINY_LLM_NAME,
                                stand_ins=("tiny LLM",))
    clap = find_official_clap()
    if clap is None and hub_reachable():
        clap = download_official_clap(log)
    if clap is not None:
        models.clap_checkpoint, models.clap_tokenizer = clap
    else:
        models.clap_checkpoint, models.clap_tokenizer = build_tiny_clap(work / "tiny-clap", log)
        models.stand_ins += ("random-weight CLAP",)
    return models


def _prefect_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "prefect"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "prefect"]


def run_deployment(stack: Stack, name: str, params: dict[str, str], timeout: float,
                   echo: Callable[[str], None] = print) -> tuple[int, str]:
    """`prefect deployment run '<name>' --param k=v ... --watch` against the stack; streams its
    output through `echo` and returns (exit code, output). Killed after `timeout` seconds."""
    args = ["deployment", "run", name, *[a for k, v in params.items() for a in ("--param", f"{k}={v}")],
            "--watch", "--watch-timeout", str(int(timeout))]
    env = stack.env()
    env.setdefault("COLUMNS", "160")
    proc = subprocess.Popen(_prefect_cmd() + args, cwd=stack.cfg.workdir, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    out: list[str] = []
    deadline = time.monotonic() + timeout + 60
    try:
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        while True:
            if time.monotonic() > deadline:
                proc.kill()
                raise DemoError(f"`prefect {shlex.join(args)}` did not finish within {timeout + 60:.0f} s; "
                                f"the worker log is {stack.root / 'logs' / 'worker.log'}")
            if sel.select(timeout=1.0):
                line = proc.stdout.readline()
                if not line:
                    break
                out.append(line)
                echo(line.rstrip("\n"))
            elif proc.poll() is not None:
                rest = proc.stdout.read()
                if rest:
                    out.append(rest)
                    echo(rest.rstrip("\n"))
                break
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    return proc.returncode, "".join(out)


def run_demo(root: Path | None = None, port: int = 4200, vllm_port: int = 8000, dataset: str = "esc50",
             timeout: float = 1800.0, echo: Callable[[str], None] = print) -> str:
    """Bring the stack up and run the demo; returns the new version's reference."""
    cfg_root = Path(root) if root is not None else StackConfig().root
    work = cfg_root.parent / "demo"
    models = choose_models(work, lambda m: echo(m))
    echo(f"LLM: {models.llm}; CLAP: {models.clap_checkpoint}")
    if models.note:
        echo(f"\n*** {models.note}\n")
    cfg = StackConfig(root=cfg_root, port=port, vllm_port=vllm_port, vllm_model=models.vllm_model,
                      vllm_served_model=models.served_name, clap_checkpoint=models.clap_checkpoint,
                      clap_tokenizer=models.clap_tokenizer, note=models.note)
    stack = Stack(cfg, log=echo)
    try:
        stack.up()
    except StackError as e:
        raise DemoError(f"{e}\n(`sept stack down` stops a stack started with other options)") from None

    name = f"generate-neighbors/{models.deployment}"
    echo(f"\n$ prefect deployment run '{name}' --param dataset={dataset} --watch\n")
    code, output = run_deployment(stack, name, {"dataset": dataset}, timeout, echo)
    if code != 0:
        raise DemoError(f"the generate-neighbors run failed (exit {code}); the reason is above, the worker log "
                        f"is {stack.root / 'logs' / 'worker.log'}")
    found = re.findall(r"new version: (\S+)", output)
    if not found:
        raise DemoError("the run completed but did not report a version; see the output above")
    ref = found[-1]

    from sept.neighbor_store import Store

    store_root = Path(stack.deploy_env()["SEPT_STORE"])
    version = Store(store_root).read(ref)
    slug, full_id = Store(store_root).resolve(version.ref)
    folder = store_root / slug / "versions" / full_id
    store_opt = "" if store_root == (Path.cwd() / "neighbor-store").resolve() else f" --store {shlex.quote(str(store_root))}"
    echo("")
    echo(f"new version {version.ref}: {len(version.neighbors)} neighbors kept, {len(version.rejected)} rejected, "
         f"{len(version.classes)} classes")
    echo(f"  neighbors: {folder / 'neighbors.jsonl'}")
    echo(f"  rejected:  {folder / 'rejected.jsonl'}")
    echo(f"  manifest:  {folder / 'manifest.json'}")
    echo("review it:")
    echo(f"  sept store{store_opt} checkout {version.ref} review/{slug}")
    echo(f"  # edit review/{slug}/neighbors.jsonl: set \"status\": \"rejected\" (and a \"reason\"), fix or add lines")
    echo(f"  sept store{store_opt} commit review/{slug} -m \"reviewed\"")
    echo(f"  sept store{store_opt} diff {version.ref} {slug}@latest")
    echo(f"the stack keeps running (UI: http://{cfg.host}:{cfg.port}); stop it with `sept stack down` (make demo-down)")
    if models.note:
        echo(f"\n*** {models.note}")
    return version.ref
