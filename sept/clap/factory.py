"""Building and loading LAION-CLAP: the project's one CLAP loader.

`load_backbone` turns "checkpoint + options" into a `ClapBackbone` around laion-clap's own
`CLAP` module (built by laion-clap's model factory), without touching a model hub:

- the RoBERTa text tower is built from its configuration and filled from the CLAP
  checkpoint, which already holds every `text_branch.*` weight;
- only the RoBERTa *tokenizer files* (vocab.json, merges.txt) are needed, from a folder
  (argument or $SEPT_ROBERTA_TOKENIZER) or from the local Hugging Face cache of `roberta-base`.

The backbone offers three calls:

- `encode_text(texts) -> [N, 512]`, batched, padded to the longest prompt of each batch;
- `encode_audio(clips) -> [N, 512]`, any sample rate / channel count, 10 s windows as laion-clap;
- the token path of prompt learners: `tokenize`, `token_embedding`,
  `encode_token_embeddings(inputs_embeds, attention_mask)` (gradients flow to the inputs).

`fingerprint` identifies the encoder (checkpoint content, options, tokenizer files); margins
and feature caches are keyed by it.

Checkpoints are read without pickle: `.safetensors` files, and `.pt` files that torch's
`weights_only` loader accepts (tensors and plain containers only). A `.pt` file that pickles
other objects (released LAION-CLAP checkpoints pickle training state beside the weights) could
run code when unpickled, so it is refused with `UntrustedCheckpointError` unless the caller
passes `trust_checkpoint=True` (the `--trust-checkpoint` option, `trust_checkpoint: true` in a
config). `sept clap convert CKPT OUT.safetensors` unpickles such a file once, on purpose, and
writes its weights as safetensors, which load safely from then on.

The fingerprint hashes the checkpoint file's bytes, so a converted file has a fingerprint of
its own, different from the original's, although it loads the same weights: margins and feature
caches keyed by the original are computed again once for the converted file. (Hashing the file,
not the unpickled tensors, is what lets `fingerprint` name a file without ever unpickling it.)
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import re
import sys
import threading
from pathlib import Path
from typing import Iterator

import torch

from sept.atomic import atomic_save
from sept.clap.model import ClapBackbone
from sept.errors import SeptError

TOKENIZER_ENV = "SEPT_ROBERTA_TOKENIZER"
TOKENIZER_FILES = ("vocab.json", "merges.txt")
ROBERTA_REPOS = ("roberta-base", "FacebookAI/roberta-base")
# roberta-base's configuration: RobertaConfig() defaults differ (vocab, positions, type vocab, eps).
ROBERTA_BASE = dict(
    vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
    intermediate_size=3072, hidden_act="gelu", max_position_embeddings=514, type_vocab_size=1,
    layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2,
)
FINGERPRINT_VERSION = 1

# Keys that old transformers saved as persistent buffers; current RobertaModel does not expect them.
_NON_PERSISTENT = ("text_branch.embeddings.position_ids", "text_branch.embeddings.token_type_ids")


class BackboneError(SeptError, RuntimeError):
    """The CLAP backbone cannot be built from what was given."""


class BackboneFileError(BackboneError, FileNotFoundError):
    """A file the backbone needs (checkpoint, tokenizer) is missing."""


class UntrustedCheckpointError(BackboneError):
    """A `.pt` checkpoint holds pickled objects besides tensors and was not marked as trusted."""


# --------------------------------------------------------------------------- hub-free laion-clap

# Held while laion-clap's hub loaders are redirected. The redirects are process-wide (class
# attributes of transformers' RobertaModel/RobertaTokenizer/BertTokenizer), so any other model
# loader of the process (the dedup stage's sentence model, a BERT tokenizer) must hold it too,
# or a thread loading it meanwhile would get a stand-in (seen: a None tokenizer).
HUB_PATCH_LOCK = threading.RLock()


@contextlib.contextmanager
def _patched(cls, name: str, value) -> Iterator[None]:
    saved = cls.__dict__.get(name)
    setattr(cls, name, value)
    try:
        yield
    finally:
        if saved is None:
            delattr(cls, name)
        else:
            setattr(cls, name, saved)


@contextlib.contextmanager
def offline_hub(tokenizer_dir: str | Path | None = None) -> Iterator[None]:
    """Redirect the hub loaders laion-clap calls to local builds, for the duration of the block.

    laion-clap asks the hub for tokenizers at import time (`laion_clap.training.data`) and for
    `RobertaModel.from_pretrained('roberta-base')` when a `CLAP` is built. Inside this block:
    RoBERTa weights are built from `ROBERTA_BASE` (random; a CLAP checkpoint overwrites them),
    the RoBERTa tokenizer comes from `tokenizer_dir` (None when not given; laion-clap's
    module-level tokenizers are only used by its own training code), and the BERT tokenizer is None.
    In transformers 5 `BartTokenizer is RobertaTokenizer`, so both follow the RoBERTa rule.
    """
    from transformers import BertTokenizer, RobertaConfig, RobertaModel, RobertaTokenizer

    def roberta_model(cls, *args, **kwargs):
        return RobertaModel(RobertaConfig(**ROBERTA_BASE))

    text_tokenizer = None if tokenizer_dir is None else load_tokenizer(tokenizer_dir)

    def roberta_tokenizer(cls, *args, **kwargs):
        return text_tokenizer

    def no_tokenizer(cls, *args, **kwargs):
        return None

    with HUB_PATCH_LOCK, contextlib.ExitStack() as stack:
        stack.enter_context(_patched(RobertaModel, "from_pretrained", classmethod(roberta_model)))
        stack.enter_context(_patched(RobertaTokenizer, "from_pretrained", classmethod(roberta_tokenizer)))
        stack.enter_context(_patched(BertTokenizer, "from_pretrained", classmethod(no_tokenizer)))
        yield


def import_laion_clap():
    """Import laion_clap without hub access (its first import fetches tokenizers otherwise)."""
    if "laion_clap" in sys.modules:
        return sys.modules["laion_clap"]
    # Every hub loader the import calls is redirected, so HF_HUB_OFFLINE is not needed (and not
    # set: it would change how other libraries of the process resolve model names).
    with offline_hub(None):
        import laion_clap
    return laion_clap


def build_clap(amodel: str = "HTSAT-tiny", enable_fusion: bool = False, device: str = "cpu"):
    """laion-clap's `CLAP` module with random weights, built as `CLAP_Module` builds it.

    Returns (model, model_cfg). About 158M parameters (HTSAT-tiny), 1.7 GB of memory.
    """
    import_laion_clap()
    # The factory CLAP_Module itself uses (laion_clap puts its folder on sys.path: `clap_module`).
    from laion_clap.hook import create_model
    from clap_module.factory import list_models

    if amodel not in list_models():
        raise BackboneError(f"unknown amodel {amodel!r}; laion-clap knows: {', '.join(list_models())}")
    with offline_hub(None):
        model, model_cfg = create_model(
            amodel, "roberta", precision="fp32", device=device, enable_fusion=enable_fusion,
            fusion_type="aff_2d" if enable_fusion else "None",
        )
    return model, model_cfg


# --------------------------------------------------------------------------- tokenizer

def _missing_tokenizer_message(problem: str) -> str:
    return (
        f"{problem}\nThe CLAP text encoder needs the roberta-base tokenizer files "
        f"{' and '.join(TOKENIZER_FILES)} (about 1.3 MB; no model weights). Either put both files "
        f"in a folder and pass that folder as the tokenizer option or set {TOKENIZER_ENV}=<folder>, "
        f"or have roberta-base in the Hugging Face cache (huggingface_hub cache folder "
        f"'models--roberta-base'; it is looked up offline, never downloaded)."
    )


def _check_tokenizer_dir(folder: Path, origin: str) -> Path:
    if not folder.is_dir():
        raise BackboneFileError(_missing_tokenizer_message(f"tokenizer folder {folder} ({origin}) does not exist."))
    missing = [name for name in TOKENIZER_FILES if not (folder / name).is_file()]
    if missing:
        raise BackboneFileError(_missing_tokenizer_message(
            f"tokenizer folder {folder} ({origin}) lacks {', '.join(missing)}."))
    return folder


def _cached_roberta_dir() -> Path | None:
    from huggingface_hub import constants, try_to_load_from_cache

    for repo in ROBERTA_REPOS:
        found = [try_to_load_from_cache(repo, name, cache_dir=constants.HF_HUB_CACHE) for name in TOKENIZER_FILES]
        if all(isinstance(path, str) for path in found):
            folder = Path(found[0]).parent
            if Path(found[1]).parent == folder:
                return folder
    return None


def find_tokenizer_dir(tokenizer: str | Path | None = None) -> Path:
    """The folder holding vocab.json + merges.txt: `tokenizer`, else $SEPT_ROBERTA_TOKENIZER,
    else the local Hugging Face cache of roberta-base. Raises BackboneFileError saying what to put where."""
    if tokenizer is not None:
        return _check_tokenizer_dir(Path(tokenizer).expanduser(), "tokenizer option")
    if os.environ.get(TOKENIZER_ENV):
        return _check_tokenizer_dir(Path(os.environ[TOKENIZER_ENV]).expanduser(), f"${TOKENIZER_ENV}")
    cached = _cached_roberta_dir()
    if cached is not None:
        return cached
    raise BackboneFileError(_missing_tokenizer_message(
        f"no RoBERTa tokenizer: no tokenizer option, {TOKENIZER_ENV} is not set, and roberta-base is "
        f"not in the local Hugging Face cache."))


def load_tokenizer(tokenizer_dir: str | Path):
    """A transformers RobertaTokenizer from a local folder (vocab.json + merges.txt), no hub."""
    from transformers import RobertaTokenizer

    folder = _check_tokenizer_dir(Path(tokenizer_dir), "tokenizer folder")
    return RobertaTokenizer.from_pretrained(str(folder), local_files_only=True)


# --------------------------------------------------------------------------- checkpoint

def _missing_checkpoint_message(path: Path) -> str:
    return (
        f"CLAP checkpoint not found: {path}. Pass the path of a LAION-CLAP checkpoint file "
        f"(for example 630k-audioset-best.pt for HTSAT-tiny, 630k-audioset-fusion-best.pt with "
        f"enable_fusion, music_audioset_epoch_15_esc_90.14.pt with amodel HTSAT-base) as the checkpoint option."
    )


def _untrusted_message(path: Path, reason: str) -> str:
    return (
        f"CLAP checkpoint {path} pickles objects besides tensors ({reason}); unpickling it can run "
        f"code, so it is not loaded without trust. Either pass --trust-checkpoint "
        f"(trust_checkpoint=true in a config) if you trust where the file comes from, or convert "
        f"it once with `sept clap convert {path} {path.with_suffix('.safetensors')}` and use the "
        f".safetensors file, which loads without pickle."
    )


def _unpickling_reason(error: Exception) -> str:
    """The line of torch's long weights_only refusal that names the offending object."""
    match = re.search(r"WeightsUnpickler error: ([^\n]*?)(?: was not an allowed global.*)?$", str(error), re.M)
    return match.group(1).strip() if match else type(error).__name__


def read_checkpoint(checkpoint: str | Path, *, trust_checkpoint: bool = False) -> dict[str, torch.Tensor]:
    """The CLAP state dict of an official-format checkpoint, with keys as `CLAP.state_dict()` names them.

    Accepts an optional {"state_dict": ...} wrapper and an optional DataParallel `module.` prefix;
    `.safetensors` files hold the state dict directly. A `.pt` file that torch's `weights_only`
    loader refuses raises `UntrustedCheckpointError` unless `trust_checkpoint` is true, in which
    case it is unpickled in full (and may run code).
    """
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise BackboneFileError(_missing_checkpoint_message(path))
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        content = load_file(str(path))
    else:
        try:
            content = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except pickle.UnpicklingError as e:
            # Released LAION-CLAP checkpoints may pickle training objects beside the weights;
            # laion-clap itself loads them with weights_only=False, which runs whatever the
            # pickle names. That is done only on the caller's word.
            if not trust_checkpoint:
                raise UntrustedCheckpointError(_untrusted_message(path, _unpickling_reason(e))) from None
            content = torch.load(path, map_location="cpu", weights_only=False)
        except RuntimeError:
            # Legacy (non-zip) serialization cannot be memory-mapped.
            content = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(content, dict) and isinstance(content.get("state_dict"), dict):
        content = content["state_dict"]
    if not isinstance(content, dict) or not content or not all(isinstance(v, torch.Tensor) for v in content.values()):
        raise BackboneError(f"{path} is not a CLAP checkpoint: expected a state dict of tensors, "
                            f"optionally wrapped as {{'state_dict': ...}}")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in content.items()}


def load_checkpoint_into(model: torch.nn.Module, checkpoint: str | Path, amodel: str, enable_fusion: bool, *,
                         trust_checkpoint: bool = False) -> None:
    """Fill `model` with the checkpoint's weights (strict), explaining a mismatch of options.
    `trust_checkpoint` as in `read_checkpoint`."""
    _load_state_into(model, read_checkpoint(checkpoint, trust_checkpoint=trust_checkpoint), checkpoint, amodel,
                     enable_fusion)


def _load_state_into(model: torch.nn.Module, state: dict[str, torch.Tensor], checkpoint: str | Path, amodel: str,
                     enable_fusion: bool) -> None:
    expected = model.state_dict()
    for key in _NON_PERSISTENT:
        if key in state and key not in expected:
            del state[key]
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong_shape:
        def fusion(keys):
            return any("fusion_model" in k or "mel_conv" in k for k in keys)

        hint = ""
        if fusion(unexpected) and not enable_fusion:
            hint = " The checkpoint holds fusion weights: load it with enable_fusion=True."
        elif fusion(missing) and enable_fusion:
            hint = " The checkpoint has no fusion weights: load it with enable_fusion=False."
        elif wrong_shape or any(k.startswith("audio_branch.") for k in missing + unexpected):
            hint = " The audio tower differs: check amodel (HTSAT-tiny for the 630k checkpoints, HTSAT-base for the music ones)."
        detail = "; ".join(f"{name} {len(keys)} (e.g. {keys[0]})" for name, keys in
                           (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)) if keys)
        raise BackboneError(f"checkpoint {checkpoint} does not fit amodel={amodel} enable_fusion={enable_fusion}: "
                            f"{detail}.{hint}")
    model.load_state_dict(state, strict=True)


def convert_checkpoint(checkpoint: str | Path, out: str | Path) -> Path:
    """Unpickle `checkpoint` (this call is the trust) and write its CLAP state dict to `out`,
    a `.safetensors` file, atomically.

    The state dict is the one `read_checkpoint` returns: `state_dict` wrapper and `module.`
    prefixes removed, every other pickled object dropped. The file's metadata records the
    source's name and sha256. `out` loads without pickle and gives the same weights; its
    fingerprint is its own (see the module docstring).
    """
    from safetensors.torch import save_file

    source = Path(checkpoint).expanduser()
    target = Path(out).expanduser()
    if target.suffix != ".safetensors":
        raise BackboneError(f"convert output {target} must end in .safetensors (the loader picks the format by suffix)")
    if target.exists() and source.exists() and target.resolve() == source.resolve():
        raise BackboneError(f"convert output {target} is the checkpoint itself; name another file")
    state = read_checkpoint(source, trust_checkpoint=True)
    # safetensors stores each tensor's own bytes: views sharing storage and strided tensors
    # are written as separate, contiguous copies.
    seen: set[int] = set()
    tensors: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        value = value.detach()
        pointer = value.untyped_storage().data_ptr() if value.numel() else None
        if pointer is not None and pointer in seen:
            value = value.clone()
        elif pointer is not None:
            seen.add(pointer)
        tensors[key] = value.contiguous()
    metadata = {"format": "pt", "sept.converted_from": source.name, "sept.source_sha256": file_sha256(source)}
    atomic_save(target, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    return target


# --------------------------------------------------------------------------- fingerprint

_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's content, streamed; remembered per (path, size, mtime) for this process."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _FILE_HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                digest.update(chunk)
        _FILE_HASHES[key] = digest.hexdigest()
    return _FILE_HASHES[key]


def fingerprint(checkpoint: str | Path, amodel: str = "HTSAT-tiny", enable_fusion: bool = False,
                tokenizer: str | Path | None = None) -> str:
    """16 hex chars naming the encoder: checkpoint content + amodel + fusion + tokenizer files."""
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise BackboneFileError(_missing_checkpoint_message(path))
    tokenizer_dir = find_tokenizer_dir(tokenizer)
    payload = {
        "version": FINGERPRINT_VERSION,
        "checkpoint": file_sha256(path),
        "amodel": amodel,
        "enable_fusion": bool(enable_fusion),
        "tokenizer": {name: file_sha256(tokenizer_dir / name) for name in TOKENIZER_FILES},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- loading

def load_backbone(checkpoint: str | Path, amodel: str = "HTSAT-tiny", enable_fusion: bool = False,
                  tokenizer: str | Path | None = None, device: str = "cpu", *,
                  trust_checkpoint: bool = False) -> ClapBackbone:
    """Build laion-clap's CLAP from a checkpoint file, frozen and in eval mode, without any hub.

    checkpoint: LAION-CLAP checkpoint ({"state_dict": ...} or bare, `module.` prefix or not,
        with or without text_branch.embeddings.position_ids; or .safetensors).
    amodel: audio tower, "HTSAT-tiny" (630k checkpoints) or "HTSAT-base" (music checkpoints).
    enable_fusion: the feature-fusion audio tower (the *-fusion-* checkpoints).
    tokenizer: folder with roberta-base's vocab.json + merges.txt; default $SEPT_ROBERTA_TOKENIZER,
        else the local Hugging Face cache of roberta-base.
    trust_checkpoint: unpickle a `.pt` checkpoint that holds objects besides tensors (can run
        code); without it such a file raises `UntrustedCheckpointError`.
    """
    # Fail on missing files before the slow build.
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise BackboneFileError(_missing_checkpoint_message(path))
    tokenizer_dir = find_tokenizer_dir(tokenizer)
    text_tokenizer = load_tokenizer(tokenizer_dir)
    # Hashed now, not on first use: it must describe the weights loaded, even if the file changes later.
    encoder_fingerprint = fingerprint(path, amodel, enable_fusion, tokenizer_dir)
    # Read (memory-mapped) before the build, so an untrusted pickle is refused at once.
    state = read_checkpoint(path, trust_checkpoint=trust_checkpoint)
    model, model_cfg = build_clap(amodel, enable_fusion, device)
    _load_state_into(model, state, path, amodel, enable_fusion)
    del state
    model.eval()
    model.requires_grad_(False)
    if len(text_tokenizer) > model.text_branch.embeddings.word_embeddings.num_embeddings:
        raise BackboneError(f"tokenizer in {tokenizer_dir} has {len(text_tokenizer)} tokens, more than the "
                            f"CLAP text encoder's {model.text_branch.embeddings.word_embeddings.num_embeddings}")
    return ClapBackbone(model, model_cfg, text_tokenizer, checkpoint=path, amodel=amodel,
                        enable_fusion=enable_fusion, tokenizer_dir=tokenizer_dir, device=device,
                        fingerprint=encoder_fingerprint)


# --------------------------------------------------------------------------- one load per process

# A Prefect, Dask or Ray worker runs many tasks (classes, seeds, sweep runs) in one process;
# each load costs seconds and gigabytes, so a backbone is loaded once per process and shared.
_BACKBONES: dict[tuple, ClapBackbone] = {}
_BACKBONES_LOCK = threading.Lock()
load_count = 0   # checkpoints this process has loaded (benchmarks and tests read it)


def _backbone_key(checkpoint, amodel: str, enable_fusion: bool, tokenizer_dir, device) -> tuple:
    path = Path(checkpoint).expanduser().resolve()
    stat = path.stat()
    return (str(path), stat.st_size, stat.st_mtime_ns, amodel, bool(enable_fusion),
            str(Path(tokenizer_dir).resolve()), str(torch.device(device)))


def get_backbone(checkpoint: str | Path, amodel: str = "HTSAT-tiny", enable_fusion: bool = False,
                 tokenizer: str | Path | None = None, device: str = "cpu", *,
                 trust_checkpoint: bool = False) -> ClapBackbone:
    """`load_backbone` with these options, loaded once per process (thread-safe).

    The key holds the checkpoint's resolved path, size and mtime, so a rewritten file loads anew.
    `trust_checkpoint` is not part of the key: it decides whether an untrusted file may be read
    at all, and a backbone already loaded (on someone's trust) holds only tensors."""
    global load_count
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise BackboneFileError(_missing_checkpoint_message(path))
    key = _backbone_key(path, amodel, enable_fusion, find_tokenizer_dir(tokenizer), device)
    with _BACKBONES_LOCK:
        backbone = _BACKBONES.get(key)
        if backbone is None:
            backbone = load_backbone(path, amodel=amodel, enable_fusion=enable_fusion, tokenizer=tokenizer,
                                     device=device, trust_checkpoint=trust_checkpoint)
            load_count += 1
            _BACKBONES[key] = backbone
        return backbone


def keep_backbone(backbone: ClapBackbone) -> None:
    """Register an already loaded backbone, so `get_backbone` with its options returns it."""
    key = _backbone_key(backbone.checkpoint, backbone.amodel, backbone.enable_fusion,
                        backbone.tokenizer_dir, str(backbone.device))
    with _BACKBONES_LOCK:
        _BACKBONES[key] = backbone
