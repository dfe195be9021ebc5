"""The frozen CLAP: `ClapBackbone` with its three calls and its fingerprint.

- `encode_text(texts) -> [N, 512]`, batched in buckets of one token length, so no batch is padded;
- `encode_audio(clips) -> [N, 512]`, any sample rate / channel count, 10 s windows as laion-clap;
- the token path of prompt learners: `tokenize`, `token_embedding`,
  `encode_token_embeddings(inputs_embeds, attention_mask)` (gradients flow to the inputs);
- the audio path in two halves for audio-side prompts: `htsat_inputs(clips)` (the fixed log-mel
  front end, storable) and `encode_htsat_inputs(inputs) -> [N, 512]` (the rest; gradients flow).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from sept.clap.audio import CLIP_SAMPLES, CROP_MODES, SAMPLE_RATE, mel_spectrogram, read_audio, to_clap_rate, to_mono

CONTEXT_LENGTH = 77           # laion-clap truncates prompts at 77 tokens


def length_buckets(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Batches of row indices by token length, shortest first: every batch holds one length.

    A length with more than `batch_size` rows is cut into near-equal batches (300 rows at 256:
    150 + 150, not 256 + 44). Rows keep their input order within a length.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    by_length: dict[int, list[int]] = {}
    for row, n in enumerate(lengths):
        by_length.setdefault(n, []).append(row)
    batches = []
    for n in sorted(by_length):
        rows = by_length[n]
        size = -(-len(rows) // -(-len(rows) // batch_size))          # ceil(len / ceil(len / batch_size))
        batches.extend(rows[start:start + size] for start in range(0, len(rows), size))
    return batches


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

        Identical texts are encoded once; each batch holds prompts of one token length
        (`length_buckets`), so no batch carries padding (same result as laion-clap's padding to 77).
        """
        texts = self._check_texts(texts)
        out = torch.empty((len(texts), self.embed_dim), device=self.device)
        if not texts:
            return out
        unique = list(dict.fromkeys(texts))
        ids = self._token_ids(unique)
        encoded = torch.empty((len(unique), self.embed_dim), device=self.device)
        for rows in length_buckets([len(x) for x in ids], batch_size):
            batch = self._pad([ids[i] for i in rows])
            encoded[rows] = F.normalize(self.model.encode_text(batch, device=self.device), dim=-1)
        position = {text: i for i, text in enumerate(unique)}
        out[:] = encoded[[position[text] for text in texts]]
        return out

    def encode_token_embeddings(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                                normalize: bool = True) -> torch.Tensor:
        """[N, L, 768] token embeddings + [N, L] mask -> unit-normalized [N, 512]; gradients flow.

        RoBERTa's pooler reads position 0 (<s>), so prompts keep <s> first and </s> after the text;
        positions are numbered from the start of the sequence, padding sits at the end.
        normalize=False: the text projection's output before normalization (DePT's head reads it).
        """
        pooled = self.model.text_branch(inputs_embeds=inputs_embeds, attention_mask=attention_mask)["pooler_output"]
        projected = self.model.text_projection(pooled)
        return F.normalize(projected, dim=-1) if normalize else projected

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

    def _clip_waves(self, audio, sample_rate, crop: str):
        """Checked arguments of the audio calls -> iterator of 48 kHz mono waveforms [T], one per clip."""
        if crop not in CROP_MODES:
            raise ValueError(f"crop must be one of {CROP_MODES}, got {crop!r}")
        if isinstance(audio, (str, Path, np.ndarray, torch.Tensor)):
            raise TypeError("audio must be a list of clips (paths or waveforms), not a single clip")
        audio = list(audio)
        rates = list(sample_rate) if isinstance(sample_rate, (list, tuple)) else [sample_rate] * len(audio)
        if len(rates) != len(audio):
            raise ValueError(f"sample_rate has {len(rates)} entries for {len(audio)} clips")

        def waves():
            for i, (item, rate) in enumerate(zip(audio, rates)):
                if isinstance(item, (str, Path)):
                    wave, rate = read_audio(item)
                else:
                    if rate is None:
                        raise ValueError(f"audio[{i}] is a waveform: pass its sample_rate")
                    if isinstance(item, torch.Tensor):
                        item = item.detach().cpu().numpy()
                    wave = to_mono(item, f"audio[{i}]")
                yield torch.from_numpy(to_clap_rate(wave, int(rate)))

        return len(audio), waves()

    def _audio_projection(self, batch: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        """laion-clap's `get_audio_embedding` without its final normalization: [B, 512]."""
        inputs = {k: torch.cat([d[k].unsqueeze(0) for d in batch], dim=0).to(self.device) for k in batch[0]}
        return self.model.audio_projection(self.model.encode_audio(inputs, device=self.device)["embedding"])

    @torch.no_grad()
    def encode_audio(self, audio: Sequence[np.ndarray | torch.Tensor | str | Path],
                     sample_rate: int | Sequence[int] | None = None, crop: str = "deterministic",
                     batch_size: int = 8, normalize: bool = True) -> torch.Tensor:
        """Unit-normalized audio embeddings [N, 512] (no grad, eval).

        `audio`: file paths (any rate / channels; soundfile, else librosa) and/or waveforms [T],
        [T, C] or [C, T] with `sample_rate` (one int for all, or one per clip). Everything is
        mixed to mono, resampled to 48 kHz and quantized to 16 bits as laion-clap does.
        `crop`: "deterministic" (centered 10 s window of longer clips) or "random" (laion-clap's).
        normalize=False: the audio projection's output before normalization (what the trainer's
        cache keeps, so DePT's FiLM can read it; normalizing it gives the default output bit for bit).
        """
        n, waves = self._clip_waves(audio, sample_rate, crop)
        out = torch.empty((n, self.embed_dim), device=self.device)
        for start in range(0, n, batch_size):
            batch = [self._clip_features(next(waves), crop) for _ in range(min(batch_size, n - start))]
            projected = self._audio_projection(batch)
            out[start:start + len(batch)] = F.normalize(projected, dim=-1) if normalize else projected
        return out

    # ---- audio in two halves: HTSAT's fixed front end, then its trainable-through rest

    @torch.no_grad()
    def htsat_inputs(self, audio: Sequence[np.ndarray | torch.Tensor | str | Path],
                     sample_rate: int | Sequence[int] | None = None, crop: str = "deterministic",
                     batch_size: int = 8) -> dict[str, torch.Tensor]:
        """What HTSAT holds just before its first batch norm (bn0), per clip (no grad, cpu).

        {"mel": [N, C, T, 64] log-mel, "longer": [N] bool}. Without fusion (C = 1) the log-mel is
        HTSAT's own spectrogram + log-mel extractors applied to laion-clap's waveform input (10 s
        after repeat-padding / the crop); with fusion (C = 4: the global view and three local
        chunks) it is laion-clap's `mel_fusion` input, which HTSAT receives ready-made. Nothing in
        this half learns, so it can be computed once per clip and stored (`encode_htsat_inputs`).
        Arguments as `encode_audio`.
        """
        n, waves = self._clip_waves(audio, sample_rate, crop)
        htsat = self.model.audio_branch
        mels, longer = [], []
        for start in range(0, n, batch_size):
            batch = [self._clip_features(next(waves), crop) for _ in range(min(batch_size, n - start))]
            if self.enable_fusion:
                mels.append(torch.stack([b["mel_fusion"] for b in batch]).float())
            else:
                wave = torch.stack([b["waveform"] for b in batch]).to(self.device)
                mels.append(htsat.logmel_extractor(htsat.spectrogram_extractor(wave)).float().cpu())
            longer.extend(bool(b["longer"].item()) for b in batch)
        mel = torch.cat(mels) if mels else torch.empty((0, 4 if self.enable_fusion else 1, 0, 0))
        return {"mel": mel, "longer": torch.tensor(longer, dtype=torch.bool)}

    def encode_htsat_inputs(self, inputs: dict[str, torch.Tensor], normalize: bool = True) -> torch.Tensor:
        """`htsat_inputs` -> unit-normalized audio embeddings [N, 512], as `encode_audio` gives them.

        normalize=False: the audio projection's output before normalization, as in `encode_audio`.

        Not under no_grad: the CLAP weights stay frozen, but gradients flow through HTSAT to
        anything a forward hook adds on the way (audio-side prompts). With fusion, laion-clap's own
        HTSAT.forward takes the dict; without, HTSAT.forward would recompute the log-mel from the
        waveform, so its remaining eval-mode steps are called here: bn0 over the mel bins,
        reshape_wav2img, forward_features (eval: no SpecAugment, no mixup).
        """
        htsat = self.model.audio_branch
        mel = inputs["mel"].to(self.device)
        if self.enable_fusion:
            out = htsat({"mel_fusion": mel, "longer": inputs["longer"].to(self.device)[:, None]}, device=self.device)
        else:
            x = htsat.bn0(mel.transpose(1, 3)).transpose(1, 3)
            out = htsat.forward_features(htsat.reshape_wav2img(x))
        projected = self.model.audio_projection(out["embedding"])
        return F.normalize(projected, dim=-1) if normalize else projected
