"""On-disk cache of audio embeddings: the audio encoder is frozen, so each clip is encoded once.

Crop policy ("deterministic", the default): clips up to 10 s are repeated then zero-padded to
10 s (laion-clap's repeatpad); longer clips are cut to the centered 10 s window (with fusion, the
middle candidate of each third). The encoder runs in eval mode, so a clip's embedding is a pure
function of (backbone weights, file content, crop policy) and can be reused across epochs,
methods, seeds and runs.

Key: sha256 of backbone fingerprint + crop policy + file identity (resolved path, size,
modification time in ns). Editing or replacing a file changes its size or mtime and misses.

Layout: <cache_dir>/<fingerprint>/<crop>/<key[:2]>/<key>.npy, float32 [512] (the audio projection
before normalization, which DePT's FiLM reads; `embed` normalizes it by default), written
atomically (temp file + rename), so concurrent runs at worst encode a clip twice.

With audio-side prompts (ASPL) the audio encoder is trained through, so its embeddings cannot be
stored; what stays fixed is HTSAT's input before its first trainable-through module, the log-mel
after the crop (`ClapBackbone.htsat_inputs`). `LogmelCache` stores that, same keys salted with
"logmel", under <cache_dir>/<fingerprint>/<crop>/logmel/<key[:2]>/<key>.npz (mel float32
[C, T, 64], longer bool; about 256 KB per clip, 1 MB with fusion's four views).
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sept.atomic import atomic_write


class _ClipCache:
    """Per-clip files keyed by backbone fingerprint + crop policy + file identity, written atomically."""

    def __init__(self, cache_dir: str | Path, backbone, crop: str = "deterministic", batch_size: int = 8):
        self.dir = Path(cache_dir).expanduser() / backbone.fingerprint / crop
        self.backbone = backbone
        self.crop = crop
        self.batch_size = batch_size
        self.hits = 0
        self.misses = 0

    salt = ""               # what a subclass stores under the same clip identity gets its own keys
    suffix = ".npy"

    def key(self, path: str | Path) -> str:
        path = Path(path).resolve()
        stat = path.stat()
        ident = f"{self.salt}{self.backbone.fingerprint}\x00{self.crop}\x00{path}\x00{stat.st_size}\x00{stat.st_mtime_ns}"
        return hashlib.sha256(ident.encode()).hexdigest()

    def _file(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}{self.suffix}"

    def _write_with(self, key: str, save) -> None:
        """`save(file object)` writes the entry; it lands whole or not at all (`sept.atomic`)."""
        buffer = io.BytesIO()
        save(buffer)
        atomic_write(self._file(key), buffer.getvalue())


class AudioCache(_ClipCache):
    """Audio embeddings [512] per clip (the frozen encoder's output).

    What is stored is the audio projection's output *before* normalization (DePT's FiLM reads it);
    `embed` normalizes on the way out unless the cache was made with normalize=False. The salt keeps
    these entries apart from unit-norm ones written before.
    """

    salt = "projection\x00"

    def __init__(self, cache_dir: str | Path, backbone, crop: str = "deterministic", batch_size: int = 8,
                 normalize: bool = True):
        super().__init__(cache_dir, backbone, crop, batch_size)
        self.normalize = normalize

    def _write(self, key: str, vector: np.ndarray) -> None:
        self._write_with(key, lambda f: np.save(f, vector.astype(np.float32)))

    def embed(self, paths: list[str | Path], progress=None) -> torch.Tensor:
        """Audio embeddings [N, 512] (unit-norm, or as projected with normalize=False; float32, cpu)
        of `paths`, encoding only misses.

        progress: optional callable(n_done) called after each encoded batch.
        """
        keys = [self.key(p) for p in paths]
        out = torch.empty((len(paths), self.backbone.embed_dim), dtype=torch.float32)
        todo: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            file = self._file(key)
            if key in todo:
                todo[key].append(i)
                continue
            try:
                vector = np.load(file)
                if vector.shape != (self.backbone.embed_dim,):
                    raise ValueError("wrong shape")
            except (FileNotFoundError, ValueError, OSError, EOFError):
                todo[key] = [i]
                continue
            out[i] = torch.from_numpy(vector)
            self.hits += 1
        pending = list(todo)
        for start in range(0, len(pending), self.batch_size):
            batch = pending[start:start + self.batch_size]
            clips = [paths[todo[k][0]] for k in batch]
            vectors = self.backbone.encode_audio(clips, crop=self.crop, batch_size=self.batch_size,
                                                 normalize=False).float().cpu()
            for k, v in zip(batch, vectors):
                self._write(k, v.numpy())
                out[todo[k]] = v
            self.misses += len(batch)
            if progress is not None:
                progress(len(batch))
        return F.normalize(out, dim=-1) if self.normalize else out


class LogmelCache(_ClipCache):
    """On-disk cache of HTSAT's fixed input per clip (`ClapBackbone.htsat_inputs`), for ASPL."""

    salt = "logmel\x00"
    suffix = ".npz"

    def __init__(self, cache_dir: str | Path, backbone, crop: str = "deterministic", batch_size: int = 8):
        super().__init__(cache_dir, backbone, crop, batch_size)
        self.dir = self.dir / "logmel"

    def load(self, paths: list[str | Path], progress=None) -> dict[str, torch.Tensor]:
        """{"mel": [N, C, T, 64] float32, "longer": [N] bool} (cpu) of `paths`, computing only misses.

        progress: optional callable(n_done) called after each computed batch.
        """
        keys = [self.key(p) for p in paths]
        found: dict[str, tuple[torch.Tensor, bool]] = {}
        todo: list[str] = []
        for i, key in enumerate(keys):
            if key in found or key in todo:
                continue
            try:
                with np.load(self._file(key)) as stored:
                    mel, longer = stored["mel"], bool(stored["longer"])
                if mel.ndim != 3:
                    raise ValueError("wrong shape")
                found[key] = (torch.from_numpy(mel), longer)
                self.hits += 1
            except (FileNotFoundError, ValueError, KeyError, OSError, EOFError):
                todo.append(key)
        first = {key: paths[i] for i, key in reversed(list(enumerate(keys)))}
        for start in range(0, len(todo), self.batch_size):
            batch = todo[start:start + self.batch_size]
            inputs = self.backbone.htsat_inputs([first[k] for k in batch], crop=self.crop, batch_size=self.batch_size)
            for k, mel, longer in zip(batch, inputs["mel"], inputs["longer"]):
                self._write_with(k, lambda f, m=mel.numpy(), g=bool(longer): np.savez(f, mel=m, longer=np.array(g)))
                found[k] = (mel, bool(longer))
            self.misses += len(batch)
            if progress is not None:
                progress(len(batch))
        if not keys:
            return {"mel": torch.empty((0, 1, 0, 0)), "longer": torch.empty(0, dtype=torch.bool)}
        return {"mel": torch.stack([found[k][0] for k in keys]),
                "longer": torch.tensor([found[k][1] for k in keys], dtype=torch.bool)}
