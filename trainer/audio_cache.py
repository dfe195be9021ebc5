"""On-disk cache of audio embeddings: the audio encoder is frozen, so each clip is encoded once.

Crop policy ("deterministic", the default): clips up to 10 s are repeated then zero-padded to
10 s (laion-clap's repeatpad); longer clips are cut to the centered 10 s window (with fusion, the
middle candidate of each third). The encoder runs in eval mode, so a clip's embedding is a pure
function of (backbone weights, file content, crop policy) and can be reused across epochs,
methods, seeds and runs.

Key: sha256 of backbone fingerprint + crop policy + file identity (resolved path, size,
modification time in ns). Editing or replacing a file changes its size or mtime and misses.

Layout: <cache_dir>/<fingerprint>/<crop>/<key[:2]>/<key>.npy, float32 [512], written
atomically (temp file + rename), so concurrent runs at worst encode a clip twice.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np
import torch


class AudioCache:
    def __init__(self, cache_dir: str | Path, backbone, crop: str = "deterministic", batch_size: int = 8):
        self.dir = Path(cache_dir).expanduser() / backbone.fingerprint / crop
        self.backbone = backbone
        self.crop = crop
        self.batch_size = batch_size
        self.hits = 0
        self.misses = 0

    def key(self, path: str | Path) -> str:
        path = Path(path).resolve()
        stat = path.stat()
        ident = f"{self.backbone.fingerprint}\x00{self.crop}\x00{path}\x00{stat.st_size}\x00{stat.st_mtime_ns}"
        return hashlib.sha256(ident.encode()).hexdigest()

    def _file(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.npy"

    def _write(self, key: str, vector: np.ndarray) -> None:
        target = self._file(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, vector.astype(np.float32))
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def embed(self, paths: list[str | Path], progress=None) -> torch.Tensor:
        """Audio embeddings [N, 512] (unit-norm, float32, cpu) of `paths`, encoding only misses.

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
            vectors = self.backbone.encode_audio(clips, crop=self.crop, batch_size=self.batch_size).float().cpu()
            for k, v in zip(batch, vectors):
                self._write(k, v.numpy())
                out[todo[k]] = v
            self.misses += len(batch)
            if progress is not None:
                progress(len(batch))
        return out
