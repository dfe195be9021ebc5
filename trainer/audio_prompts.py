"""Audio-side prompts (ASPL): learnable FiLM inside the frozen HTSAT audio encoder.

ASPL (Cho, Jang, Kim, Chung, Interspeech 2026; reference code hyebin-c/aspl) modulates three
stages of HTSAT with channel-wise FiLM, x -> gamma * x + beta:

  stage       where (laion-clap's own modules, by forward hooks)            shape
  spectral    the log-mel, per mel bin: input of `bn0`                       [64]
  token       the patch-embedding output (after its LayerNorm): `patch_embed` [96]
  structural  the output of the first Swin stage (after its patch merging):   [192]
              `layers[0]`

`audio_prompt=aspl` is spectral + token (2 x 64 + 2 x 96 = 320 parameters), `aspl+` adds
structural (+ 2 x 192 = 704): the paper's counts. The CLAP weights stay frozen and in eval mode;
gradients flow through HTSAT into gamma and beta only. The hooks are attached only while
`AudioPrompt.encode` runs, so the shared backbone's `encode_audio` is never modulated.

Where the reference's wrapper (pengi/models/htsat.py, `HTSATWrapper` and
`HTSAT_Swin_Transformer.forward_features`) differs from the paper, and what is done here:

1. Token FiLM is created but never applied. The wrapper makes `gamma`, `beta` [1, 1, 96] and
   passes them as `token_params`; `forward_features` reads them after `patch_embed` and never
   uses them (no `gamma * x + beta`). In the reference, ASPL's 320 parameters are 128 live
   spectral ones plus 192 dead ones. Here the token FiLM is applied, as the paper describes and
   counts it; so `aspl` here is the paper's method, not the reference's effective one (spectral
   FiLM only, plus ASPL+'s structural FiLM).
2. Initial values are not the identity. Token: gamma ~ N(1, 0.02), beta ~ N(0, 0.02);
   structural: gamma ~ N(0.5, 0.02) (the first stage's output, HTSAT's residual stream, halved
   before training starts), beta ~ N(0, 0.02); spectral alone starts at gamma 1, beta 0. Here
   every stage starts at exactly gamma 1, beta 0: an untrained audio prompt is the frozen CLAP
   (the audio embeddings equal `encode_audio`), so ASPL on a learner starts where the learner
   alone starts, and the comparison with and without ASPL isolates what training adds. Halving
   the residual stream is not motivated in the paper.
3. The frozen encoder runs in train mode in the reference (`utils/trainer.py` calls
   `model.train()` on the whole model): HTSAT then applies SpecAugment and stochastic depth,
   and bn0's running statistics drift with the few-shot batches (which is why its checkpoints
   store bn0's buffers). Here the backbone stays in eval mode: the front end is deterministic
   and can be stored once per clip, every CLAP weight and buffer stays bit for bit as loaded,
   and a resumed run continues exactly.
4. The reference saves only the text prompt and bn0's buffers (`utils/utils.py`, `save_model`),
   so a reloaded ASPL model has lost its audio prompts. Here they are in every run checkpoint.
5. `structural=[2]` in the reference makes [1, 1, 288] parameters for a 384-channel stage and
   would fail to broadcast; ASPL+ uses only the first stage ([1]), as here.
6. The reference builds on Pengi's HTSAT (44.1 kHz, 7 s clips); here it is LAION-CLAP's
   HTSAT-tiny (48 kHz, 10 s), whose stages have the same widths (64 mel bins, 96, 192).

Optimization follows the reference: the FiLM parameters join the text prompt's SGD at the
prompt's learning rate and momentum (main.py: one SGD over prompt_learner + gamma/beta), and
the gradient norm of all trained parameters is clipped at 1.0 before each step
(utils/trainer.py, `run_epoch`: clip_grad_norm_(learnable_params, max_norm=1.0)).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn as nn

AUDIO_PROMPTS: dict[str, tuple[str, ...]] = {
    "none": (),
    "aspl": ("spectral", "token"),
    "aspl+": ("spectral", "token", "structural"),
}
# utils/trainer.py of the reference: clip_grad_norm_(learnable_params, max_norm=1.0)
GRAD_CLIP = 1.0


class StageFiLM(nn.Module):
    """gamma * x + beta over one channel axis; gamma 1, beta 0 at initialization (the identity)."""

    def __init__(self, width: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(width))
        self.beta = nn.Parameter(torch.zeros(width))

    def forward(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        shape = [1] * x.dim()
        shape[dim] = -1
        return x * self.gamma.view(shape).to(x.dtype) + self.beta.view(shape).to(x.dtype)


class AudioPrompt(nn.Module):
    """FiLM at the HTSAT stages of `kind` ("aspl" or "aspl+"), applied while `encode` runs.

    backbone: a ClapBackbone with an HTSAT audio tower (held as a plain attribute, so its
    weights stay out of this module's parameters and state dict).
    """

    def __init__(self, backbone, kind: str):
        super().__init__()
        if kind not in AUDIO_PROMPTS or not AUDIO_PROMPTS[kind]:
            raise ValueError(f"audio_prompt must be one of {', '.join(k for k in AUDIO_PROMPTS if k != 'none')}, "
                             f"got {kind!r}")
        htsat = backbone.model.audio_branch
        for name in ("bn0", "patch_embed", "layers"):
            if not hasattr(htsat, name):
                raise ValueError(f"audio_prompt={kind!r} needs an HTSAT audio tower; "
                                 f"{type(htsat).__name__} has no {name!r}")
        self.backbone = backbone
        self.kind = kind
        widths = {"spectral": htsat.bn0.num_features,             # mel bins
                  "token": htsat.patch_embed.embed_dim,           # patch embedding channels
                  "structural": htsat.layers[1].dim}              # first stage's output, after patch merging
        self.film = nn.ModuleDict({stage: StageFiLM(widths[stage]) for stage in AUDIO_PROMPTS[kind]})
        self.to(backbone.device)

    # the gradient norm of every parameter the run trains is clipped at this (utils/trainer.py)
    grad_clip = GRAD_CLIP

    @property
    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def param_groups(self) -> list[dict]:
        """The FiLM joins the text prompt's SGD at the prompt's lr and momentum (main.py): one group,
        with weight decay 0 whatever the run's `weight_decay` (DePT's 5e-4 included): ASPL's
        reference (hyebin-c/aspl main.py) gives the FiLM's optimizer no weight decay, and a decay
        would pull gamma/beta towards 0 rather than towards the identity FiLM (gamma 1, beta 0)."""
        return [{"params": list(self.parameters()), "weight_decay": 0.0}]

    @contextmanager
    def applied(self) -> Iterator[None]:
        """Hooks on laion-clap's HTSAT modules for the duration of the block, then removed."""
        htsat = self.backbone.model.audio_branch
        film = self.film
        handles = []
        if "spectral" in film:
            # bn0 sees the log-mel transposed to [B, mel_bins, T, C]: the mel bins are axis 1.
            handles.append(htsat.bn0.register_forward_pre_hook(
                lambda module, args: (film["spectral"](args[0], 1),) + args[1:]))
        if "token" in film:
            handles.append(htsat.patch_embed.register_forward_hook(
                lambda module, args, out: film["token"](out, -1)))
        if "structural" in film:
            # a Swin stage returns (x [B, N, 192], attention)
            handles.append(htsat.layers[0].register_forward_hook(
                lambda module, args, out: (film["structural"](out[0], -1),) + tuple(out[1:])))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def encode(self, inputs: dict[str, torch.Tensor], normalize: bool = True) -> torch.Tensor:
        """`ClapBackbone.htsat_inputs` of a batch -> unit-norm audio embeddings [B, 512] (grad flows).

        normalize=False: the audio projection before normalization (what DePT's FiLM reads)."""
        with self.applied():
            return self.backbone.encode_htsat_inputs(inputs, normalize=normalize)


def build_audio_prompt(kind: str, backbone) -> AudioPrompt | None:
    """The run's audio prompt, or None for audio_prompt="none"."""
    if kind == "none":
        return None
    return AudioPrompt(backbone, kind)


class PromptedAudio:
    """A run's audio features when the audio encoder carries a prompt.

    The embedding cache no longer applies (the embeddings change with every step); the log-mel
    does not change, so `LogmelCache` stores it and HTSAT's rest runs per call, through the prompt.
    Same `embed(paths, progress)` / `hits` / `misses` / `dir` as AudioCache, for evaluation;
    normalize=False as there (the audio projection before normalization, for DePT).
    """

    def __init__(self, cache_dir, backbone, prompt: AudioPrompt, crop: str = "deterministic",
                 batch_size: int = 32, normalize: bool = True):
        from sept.trainer.audio_cache import LogmelCache

        self.logmels = LogmelCache(cache_dir, backbone, crop)
        self.prompt = prompt
        self.batch_size = batch_size
        self.normalize = normalize

    @property
    def hits(self) -> int:
        return self.logmels.hits

    @property
    def misses(self) -> int:
        return self.logmels.misses

    @property
    def dir(self):
        return self.logmels.dir

    def inputs(self, paths, progress=None) -> dict[str, torch.Tensor]:
        """HTSAT inputs of `paths` (the training set's, kept for the run): {"mel", "longer"}, cpu."""
        return self.logmels.load(list(paths), progress=progress)

    @torch.no_grad()
    def embed(self, paths, progress=None) -> torch.Tensor:
        """Audio embeddings [N, 512] (unit-norm, float32, cpu) through the prompt as it is now.

        Log-mels are read batch by batch, so a test set is never held in memory at once.
        progress: optional callable(n_done) called after each batch (computed or read).
        """
        paths = list(paths)
        out = torch.empty((len(paths), self.prompt.backbone.embed_dim), dtype=torch.float32)
        for start in range(0, len(paths), self.batch_size):
            batch = paths[start:start + self.batch_size]
            out[start:start + len(batch)] = self.prompt.encode(self.logmels.load(batch), self.normalize).float().cpu()
            if progress is not None:
                progress(len(batch))
        return out


def audio_features_source(cache_dir, backbone, prompt: AudioPrompt | None, crop: str = "deterministic",
                          normalize: bool = True):
    """The embedding cache without an audio prompt, else `PromptedAudio`.

    normalize=False (DePT): the audio projection before normalization, from the cache or through
    the audio prompt alike."""
    if prompt is None:
        from sept.trainer.audio_cache import AudioCache

        return AudioCache(cache_dir, backbone, crop, normalize=normalize)
    return PromptedAudio(cache_dir, backbone, prompt, crop, normalize=normalize)


def trainable_counts(learner, prompt: AudioPrompt | None) -> dict[str, int]:
    """{"text": N, "audio": N}: parameters the method trains, text side (the learner) and audio side."""
    text = sum(p.numel() for p in learner.parameters() if p.requires_grad) if learner.trainable else 0
    audio = sum(p.numel() for p in prompt.parameters() if p.requires_grad) if prompt is not None else 0
    return {"text": int(text), "audio": int(audio)}
