"""LAION-CLAP as a frozen backbone: the project's one CLAP loader.

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
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import sys
import threading
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

TOKENIZER_ENV = "SEPT_ROBERTA_TOKENIZER"
TOKENIZER_FILES = ("vocab.json", "merges.txt")
ROBERTA_REPOS = ("roberta-base", "FacebookAI/roberta-base")
# roberta-base's configuration: RobertaConfig() defaults differ (vocab, positions, type vocab, eps).
ROBERTA_BASE = dict(
    vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
    intermediate_size=3072, hidden_act="gelu", max_position_embeddings=514, type_vocab_size=1,
    layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2,
)
CONTEXT_LENGTH = 77           # laion-clap truncates prompts at 77 tokens
SAMPLE_RATE = 48000           # CLAP's audio front end
CLIP_SAMPLES = 480000         # one 10 s window at 48 kHz
CROP_MODES = ("deterministic", "random")
FINGERPRINT_VERSION = 1

# Keys that old transformers saved as persistent buffers; current RobertaModel does not expect them.
_NON_PERSISTENT = ("text_branch.embeddings.position_ids", "text_branch.embeddings.token_type_ids")


class BackboneError(RuntimeError):
    """The CLAP backbone cannot be built from what was given."""


class BackboneFileError(BackboneError, FileNotFoundError):
    """A file the backbone needs (checkpoint, tokenizer) is missing."""


# --------------------------------------------------------------------------- hub-free laion-clap

_PATCH_LOCK = threading.RLock()


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

    with _PATCH_LOCK, contextlib.ExitStack() as stack:
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


def read_checkpoint(checkpoint: str | Path) -> dict[str, torch.Tensor]:
    """The CLAP state dict of an official-format checkpoint, with keys as `CLAP.state_dict()` names them.

    Accepts an optional {"state_dict": ...} wrapper and an optional DataParallel `module.` prefix;
    `.safetensors` files hold the state dict directly.
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
        except pickle.UnpicklingError:
            # Released LAION-CLAP checkpoints may pickle training objects beside the weights;
            # laion-clap itself loads them with weights_only=False.
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


def load_checkpoint_into(model: torch.nn.Module, checkpoint: str | Path, amodel: str, enable_fusion: bool) -> None:
    """Fill `model` with the checkpoint's weights (strict), explaining a mismatch of options."""
    state = read_checkpoint(checkpoint)
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


# --------------------------------------------------------------------------- audio front end

def _to_mono(wave: np.ndarray, origin: str) -> np.ndarray:
    """[T] or [T, C] / [C, T] (channels = the shorter axis) -> [T] float32, channel mean."""
    wave = np.asarray(wave)
    if np.issubdtype(wave.dtype, np.integer):
        wave = wave.astype(np.float32) / float(np.iinfo(wave.dtype).max)
    wave = wave.astype(np.float32, copy=False)
    if wave.ndim == 2:
        wave = wave.mean(axis=0 if wave.shape[0] < wave.shape[1] else 1)
    elif wave.ndim != 1:
        raise ValueError(f"{origin}: expected a waveform of shape [T], [T, C] or [C, T], got {tuple(wave.shape)}")
    if wave.size == 0:
        raise ValueError(f"{origin}: empty waveform")
    if not np.isfinite(wave).all():
        raise ValueError(f"{origin}: waveform holds NaN or infinite values")
    return wave


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Mono float32 waveform [T] and its sample rate; soundfile first, librosa for other formats."""
    import soundfile

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file not found: {path}")
    try:
        wave, rate = soundfile.read(str(path), dtype="float32", always_2d=True)   # [T, C]
        wave = wave.T
    except soundfile.LibsndfileError:
        import librosa

        wave, rate = librosa.load(str(path), sr=None, mono=False)
    return _to_mono(wave, str(path)), int(rate)


def to_clap_rate(wave: np.ndarray, rate: int) -> np.ndarray:
    """[T] at `rate` -> [T'] at 48 kHz, quantized to 16 bits as laion-clap does before encoding."""
    if rate != SAMPLE_RATE:
        import librosa

        # soxr_hq: what librosa.load(path, sr=48000) uses in laion-clap's file path.
        wave = librosa.resample(wave, orig_sr=rate, target_sr=SAMPLE_RATE, res_type="soxr_hq")
    wave = np.clip(wave, -1.0, 1.0)
    return ((wave * 32767.0).astype(np.int16) / 32767.0).astype(np.float32)


def mel_spectrogram(wave: torch.Tensor, audio_cfg: dict) -> torch.Tensor:
    """[T] -> log-mel [frames, mel_bins]: laion-clap's `get_mel` (fusion input).

    Same computation as torchaudio's MelSpectrogram(power 2, htk scale, no norm, centered reflect
    padding) + AmplitudeToDB(top_db=None), written with torch.stft so torchaudio is not required.
    """
    n_fft, hop = audio_cfg["window_size"], audio_cfg["hop_size"]
    window = torch.hann_window(n_fft, device=wave.device)
    spec = torch.stft(wave, n_fft, hop_length=hop, win_length=n_fft, window=window, center=True,
                      pad_mode="reflect", normalized=False, onesided=True, return_complex=True).abs().pow(2)
    n_freqs, n_mels = n_fft // 2 + 1, audio_cfg["mel_bins"]
    all_freqs = torch.linspace(0, audio_cfg["sample_rate"] // 2, n_freqs)
    m_min, m_max = (2595.0 * np.log10(1.0 + f / 700.0) for f in (audio_cfg["fmin"], audio_cfg["fmax"]))
    m_pts = torch.linspace(m_min, m_max, n_mels + 2)                            # htk mel scale
    f_pts = 700.0 * (10 ** (m_pts / 2595.0) - 1.0)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)
    down = (-1.0 * slopes[:, :-2]) / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    banks = torch.max(torch.zeros(1), torch.min(down, up)).to(wave.device)     # [n_freqs, n_mels]
    mel = torch.matmul(spec.transpose(-1, -2), banks)                           # [frames, n_mels]
    return 10.0 * torch.log10(torch.clamp(mel, min=1e-10))


# --------------------------------------------------------------------------- the backbone

class ClapBackbone:
    """A frozen LAION-CLAP (eval mode, no parameter requires grad).

    A plain object, not an nn.Module: a prompt learner may keep a reference to it without
    the CLAP weights entering the learner's parameters or state dict.
    """

    embed_dim = 512          # joint audio-text space
    text_dim = 768           # RoBERTa token width
    context_length = CONTEXT_LENGTH
    sample_rate = SAMPLE_RATE

    def __init__(self, model, model_cfg: dict, tokenizer, *, checkpoint: Path, amodel: str,
                 enable_fusion: bool, tokenizer_dir: Path, device: str, fingerprint: str):
        self.model = model
        self.model_cfg = model_cfg
        self.tokenizer = tokenizer
        self.checkpoint = checkpoint
        self.amodel = amodel
        self.enable_fusion = enable_fusion
        self.tokenizer_dir = tokenizer_dir
        self.device = torch.device(device)
        self._fingerprint = fingerprint

    def __repr__(self) -> str:
        return (f"ClapBackbone(checkpoint={str(self.checkpoint)!r}, amodel={self.amodel!r}, "
                f"enable_fusion={self.enable_fusion}, device={str(self.device)!r})")

    @property
    def fingerprint(self) -> str:
        """16 hex chars: checkpoint content + amodel + fusion + tokenizer files, taken at load time."""
        return self._fingerprint

    @property
    def logit_scale(self) -> float:
        """exp(logit_scale_a): CLAP's audio-text temperature."""
        return float(self.model.logit_scale_a.detach().exp())

    @property
    def token_embedding(self) -> torch.nn.Embedding:
        """RoBERTa's word embeddings, [vocab, 768]."""
        return self.model.text_branch.embeddings.word_embeddings

    # ---- text

    def _check_texts(self, texts: Sequence[str]) -> list[str]:
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, not one string")
        texts = list(texts)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{i}] is {type(text).__name__}, expected str")
        return texts

    def _pad(self, ids: list[list[int]]) -> dict[str, torch.Tensor]:
        length = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), length), self.tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(ids), length), dtype=torch.long)
        for row, x in enumerate(ids):
            input_ids[row, :len(x)] = torch.tensor(x, dtype=torch.long)
            attention_mask[row, :len(x)] = 1
        return {"input_ids": input_ids.to(self.device), "attention_mask": attention_mask.to(self.device)}

    def _token_ids(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, truncation=True, max_length=CONTEXT_LENGTH)["input_ids"]

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """input_ids, attention_mask: [N, L], L = longest prompt (<= 77), <s> at position 0."""
        texts = self._check_texts(texts)
        if not texts:
            raise ValueError("tokenize needs at least one text")
        return self._pad(self._token_ids(texts))

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """Unit-normalized text embeddings [N, 512] (no grad, eval).

        Identical texts are encoded once; batches are formed by token length so each batch is
        padded only to its own longest prompt (same result as laion-clap's padding to 77).
        """
        texts = self._check_texts(texts)
        out = torch.empty((len(texts), self.embed_dim), device=self.device)
        if not texts:
            return out
        unique = list(dict.fromkeys(texts))
        ids = self._token_ids(unique)
        order = sorted(range(len(unique)), key=lambda i: len(ids[i]))
        encoded = torch.empty((len(unique), self.embed_dim), device=self.device)
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            batch = self._pad([ids[i] for i in rows])
            encoded[rows] = F.normalize(self.model.encode_text(batch, device=self.device), dim=-1)
        position = {text: i for i, text in enumerate(unique)}
        out[:] = encoded[[position[text] for text in texts]]
        return out

    def encode_token_embeddings(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[N, L, 768] token embeddings + [N, L] mask -> unit-normalized [N, 512]; gradients flow.

        RoBERTa's pooler reads position 0 (<s>), so prompts keep <s> first and </s> after the text;
        positions are numbered from the start of the sequence, padding sits at the end.
        """
        pooled = self.model.text_branch(inputs_embeds=inputs_embeds, attention_mask=attention_mask)["pooler_output"]
        return F.normalize(self.model.text_projection(pooled), dim=-1)

    # ---- audio

    def _clip_features(self, wave: torch.Tensor, crop: str) -> dict[str, torch.Tensor]:
        """One 48 kHz waveform [T] -> laion-clap's input dict (`get_audio_features`, repeatpad).

        Short clips are repeated then zero-padded to 10 s. Long clips: `random` draws the 10 s
        window (and, with fusion, the three local chunks) with numpy's global generator in
        laion-clap's order, so np.random.seed reproduces laion-clap; `deterministic` takes the
        centered window and the middle candidate of each third.
        """
        cfg = self.model_cfg["audio_cfg"]
        sample: dict[str, torch.Tensor] = {}
        longer = False
        pick = (lambda r: np.random.choice(r)) if crop == "random" else (lambda r: r[len(r) // 2])
        if len(wave) > CLIP_SAMPLES:
            if self.enable_fusion:
                mel = mel_spectrogram(wave, cfg)
                chunk_frames = CLIP_SAMPLES // cfg["hop_size"] + 1
                total_frames = mel.shape[0]
                if chunk_frames == total_frames:
                    # Longer than 10 s by less than one hop: the whole clip is one window.
                    sample["mel_fusion"] = torch.stack([mel, mel, mel, mel], dim=0)
                else:
                    ranges = np.array_split(list(range(0, total_frames - chunk_frames + 1)), 3)
                    ranges = [r if len(r) else np.array([0]) for r in ranges]
                    starts = [int(pick(r)) for r in ranges]
                    import torchvision

                    shrunk = torchvision.transforms.Resize(size=[chunk_frames, cfg["mel_bins"]])(mel[None])[0]
                    chunks = [mel[s:s + chunk_frames, :] for s in starts]
                    sample["mel_fusion"] = torch.stack([shrunk, *chunks], dim=0)
                    longer = True
            overflow = len(wave) - CLIP_SAMPLES
            start = np.random.randint(0, overflow + 1) if crop == "random" else overflow // 2
            wave = wave[start:start + CLIP_SAMPLES]
        else:
            if len(wave) < CLIP_SAMPLES:
                wave = wave.repeat(CLIP_SAMPLES // len(wave))
                wave = F.pad(wave, (0, CLIP_SAMPLES - len(wave)), mode="constant", value=0)
            if self.enable_fusion:
                mel = mel_spectrogram(wave, cfg)
                sample["mel_fusion"] = torch.stack([mel, mel, mel, mel], dim=0)
        sample["longer"] = torch.tensor([longer])
        sample["waveform"] = wave
        return sample

    @torch.no_grad()
    def encode_audio(self, audio: Sequence[np.ndarray | torch.Tensor | str | Path],
                     sample_rate: int | Sequence[int] | None = None, crop: str = "deterministic",
                     batch_size: int = 8) -> torch.Tensor:
        """Unit-normalized audio embeddings [N, 512] (no grad, eval).

        `audio`: file paths (any rate / channels; soundfile, else librosa) and/or waveforms [T],
        [T, C] or [C, T] with `sample_rate` (one int for all, or one per clip). Everything is
        mixed to mono, resampled to 48 kHz and quantized to 16 bits as laion-clap does.
        `crop`: "deterministic" (centered 10 s window of longer clips) or "random" (laion-clap's).
        """
        if crop not in CROP_MODES:
            raise ValueError(f"crop must be one of {CROP_MODES}, got {crop!r}")
        if isinstance(audio, (str, Path, np.ndarray, torch.Tensor)):
            raise TypeError("audio must be a list of clips (paths or waveforms), not a single clip")
        audio = list(audio)
        rates = list(sample_rate) if isinstance(sample_rate, (list, tuple)) else [sample_rate] * len(audio)
        if len(rates) != len(audio):
            raise ValueError(f"sample_rate has {len(rates)} entries for {len(audio)} clips")
        out = torch.empty((len(audio), self.embed_dim), device=self.device)
        for start in range(0, len(audio), batch_size):
            batch = []
            for i in range(start, min(start + batch_size, len(audio))):
                item, rate = audio[i], rates[i]
                if isinstance(item, (str, Path)):
                    wave, rate = read_audio(item)
                else:
                    if rate is None:
                        raise ValueError(f"audio[{i}] is a waveform: pass its sample_rate")
                    if isinstance(item, torch.Tensor):
                        item = item.detach().cpu().numpy()
                    wave = _to_mono(item, f"audio[{i}]")
                wave = torch.from_numpy(to_clap_rate(wave, int(rate)))
                batch.append(self._clip_features(wave, crop))
            out[start:start + len(batch)] = self.model.get_audio_embedding(batch)
        return out


def load_backbone(checkpoint: str | Path, amodel: str = "HTSAT-tiny", enable_fusion: bool = False,
                  tokenizer: str | Path | None = None, device: str = "cpu") -> ClapBackbone:
    """Build laion-clap's CLAP from a checkpoint file, frozen and in eval mode, without any hub.

    checkpoint: LAION-CLAP checkpoint ({"state_dict": ...} or bare, `module.` prefix or not,
        with or without text_branch.embeddings.position_ids; or .safetensors).
    amodel: audio tower, "HTSAT-tiny" (630k checkpoints) or "HTSAT-base" (music checkpoints).
    enable_fusion: the feature-fusion audio tower (the *-fusion-* checkpoints).
    tokenizer: folder with roberta-base's vocab.json + merges.txt; default $SEPT_ROBERTA_TOKENIZER,
        else the local Hugging Face cache of roberta-base.
    """
    # Fail on missing files before the slow build.
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise BackboneFileError(_missing_checkpoint_message(path))
    tokenizer_dir = find_tokenizer_dir(tokenizer)
    text_tokenizer = load_tokenizer(tokenizer_dir)
    # Hashed now, not on first use: it must describe the weights loaded, even if the file changes later.
    encoder_fingerprint = fingerprint(path, amodel, enable_fusion, tokenizer_dir)
    model, model_cfg = build_clap(amodel, enable_fusion, device)
    load_checkpoint_into(model, path, amodel, enable_fusion)
    model.eval()
    model.requires_grad_(False)
    if len(text_tokenizer) > model.text_branch.embeddings.word_embeddings.num_embeddings:
        raise BackboneError(f"tokenizer in {tokenizer_dir} has {len(text_tokenizer)} tokens, more than the "
                            f"CLAP text encoder's {model.text_branch.embeddings.word_embeddings.num_embeddings}")
    return ClapBackbone(model, model_cfg, text_tokenizer, checkpoint=path, amodel=amodel,
                        enable_fusion=enable_fusion, tokenizer_dir=tokenizer_dir, device=device,
                        fingerprint=encoder_fingerprint)
