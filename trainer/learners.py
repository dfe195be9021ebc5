"""Prompt learners: each maps texts (class names or neighbor texts) to joint-space embeddings,
and owns how its embeddings become a training step's loss and an evaluation's logits.

One interface, `Learner.forward(texts, owners) -> [N, 512]` unit-norm:
  texts   N strings (a class name, or a neighbor text of some class)
  owners  [N] long, the index (in the learner's `classes`) of the class each text belongs to,
          or -1 for a class the learner was not trained on (new classes, other datasets).
Neighbors go through the same call as their classes, which is what SEPT needs. Learners that
keep per-class parameters (PALM) read `owners`; the others ignore it.

The training program (trainer/train.py) knows only this protocol, one call each:
  step_loss(audio, labels, classes, logit_scale) -> Step   CE + the learner's own terms
  sept_embeddings(step, texts, owners) -> (z [C, D], p [S, D])   what SEPT compares
  logits(audio, classes, logit_scale) -> [N, C]            evaluation (no gradients)
  param_groups(cfg)                                        the SGD parameter groups
  audio_normalized                                         whether audio arrives unit-norm
and `audio_normalized(cfg)` says the same before a learner exists (the audio cache is built first).

A *conditional* learner (`conditional = True`, CoCoOp) builds its prompts from audio as well:
`forward(texts, owners, condition)` takes audio features condition [B, 512] and returns one
embedding per (clip, text), [B, N, 512]; its step and logits score each clip against its own
class embeddings.

The prompt learners (CoOp, CoCoOp, KgCoOp) also have `features(...)`: the same embeddings before
normalization, which DePT's FiLM reads; `DePT` wraps any of them (`dept=true`), see its docstring.

The CLAP backbone stays frozen and in eval mode (no dropout), so a learner's output depends
only on its own parameters. Adding a method = one class here + one entry in LEARNERS.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F


# Conditional learners encode clips x classes prompts at evaluation; this bounds one text-encoder call.
PROMPTS_PER_CALL = 1024


class Step(NamedTuple):
    """One training step's loss and what SEPT's term of the same step reuses."""

    loss: torch.Tensor                # CE (+ the learner's own terms), a scalar with gradients
    parts: dict[str, float]           # its named terms for the history ("ce", ...)
    classes: list[str]                # the step's label space
    class_embeddings: torch.Tensor    # [C, D] unit-norm; a conditional learner's [B, C, D]
    audio: torch.Tensor               # [B, D] the unit-norm audio features the logits used


class Learner(nn.Module):
    trainable = True
    conditional = False       # True: forward also takes audio features and returns [B, N, 512]
    audio_normalized = True   # False (DePT): audio features arrive before normalization

    def __init__(self, backbone, classes: list[str], cfg):
        super().__init__()
        self.backbone = backbone          # plain object: CLAP weights stay out of state_dict
        self.classes = list(classes)

    def forward(self, texts: list[str], owners: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def regularizer(self, texts: list[str], embeddings: torch.Tensor) -> torch.Tensor:
        """Extra loss on the class embeddings of a step (KgCoOp); zero by default."""
        return embeddings.new_zeros(())

    def class_owners(self, texts: list[str]) -> torch.Tensor:
        """[N] owners of class-name texts: their index in `classes`, -1 if unseen."""
        index = {c: i for i, c in enumerate(self.classes)}
        return torch.tensor([index.get(t, -1) for t in texts], dtype=torch.long)

    # ---- the pieces a step is made of; a conditional learner overrides them together

    def class_embeddings(self, classes: list[str], owners: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """The class embeddings that score audio [B, D]: [C, D] (a conditional learner's [B, C, D])."""
        return self(classes, owners)

    def score(self, audio: torch.Tensor, z: torch.Tensor, logit_scale: float) -> torch.Tensor:
        """Logits [B, C] of audio [B, D] against `class_embeddings` z."""
        return logit_scale * audio.to(z.dtype) @ z.t()

    def label_rows(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Each clip's own-label row [B, D] of `class_embeddings` (or their features) z."""
        return z[labels]

    def regularized(self, classes: list[str], z: torch.Tensor) -> tuple[list[str], torch.Tensor]:
        """The (texts, embeddings [N, D]) pairs `regularizer` sees of a step's class embeddings z."""
        return classes, z

    # ---- the protocol of the training step and evaluation

    def step_loss(self, audio: torch.Tensor, labels: torch.Tensor, classes: list[str],
                  logit_scale: float) -> Step:
        """CE over `classes` of audio features [B, D] (as `audio_normalized` says) + `regularizer`."""
        z = self.class_embeddings(classes, torch.arange(len(classes)), audio)
        ce = F.cross_entropy(self.score(audio, z, logit_scale).float(), labels)
        loss = ce + self.regularizer(*self.regularized(classes, z))
        return Step(loss, {"ce": ce.item()}, classes, z, audio)

    def sept_embeddings(self, step: Step, texts: list[str], owners: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """SEPT's class embeddings z [C, D] and neighbor embeddings p [S, D] for the step `step`
        (neighbor texts with their owners [S]): the step's own class embeddings, the neighbors
        through the same prompt."""
        return step.class_embeddings, self(texts, owners)

    @torch.no_grad()
    def logits(self, audio: torch.Tensor, classes: list[str], logit_scale: float,
               prompts_per_call: int = PROMPTS_PER_CALL) -> torch.Tensor:
        """Audio features [N, D] -> logits [N, C] = scale * a @ z^T over the label space `classes`
        (no gradients). prompts_per_call bounds one text-encoder call of a conditional learner."""
        return self.eval_logits(audio, classes, logit_scale, prompts_per_call)

    def eval_logits(self, audio, classes, logit_scale, prompts_per_call):
        """`logits` without its no_grad (what subclasses override)."""
        z = self(classes, self.class_owners(classes)).float()                  # [C, D]
        return logit_scale * audio.to(z.device).float() @ z.t()

    def param_groups(self, cfg) -> list[dict]:
        """SGD parameter groups: one, at the run's lr."""
        return [{"params": list(self.parameters())}]


class _TextMemo:
    """Frozen per-text embeddings, computed once (the text encoder is frozen and in eval mode)."""

    def __init__(self, encode):
        self.encode = encode
        self.memo: dict[str, torch.Tensor] = {}

    def __call__(self, texts: list[str]) -> torch.Tensor:
        missing = [t for t in dict.fromkeys(texts) if t not in self.memo]
        if missing:
            for t, e in zip(missing, self.encode(missing)):
                self.memo[t] = e.float()
        return torch.stack([self.memo[t] for t in texts])


class ZeroShot(Learner):
    """Hand-written templates, no parameters: mean of unit-norm template embeddings, renormalized."""

    trainable = False

    def __init__(self, backbone, classes, cfg):
        super().__init__(backbone, classes, cfg)
        from sept.prompts import load_templates

        templates = list(load_templates(cfg.templates).templates)
        self.templates = templates if cfg.ensemble else templates[:1]
        self.embed = _TextMemo(self._encode)

    def _encode(self, texts: list[str]) -> torch.Tensor:
        T = len(self.templates)
        filled = [t.format(x) for x in texts for t in self.templates]
        emb = self.backbone.encode_text(filled).float().view(len(texts), T, -1)
        return F.normalize(emb.mean(dim=1), dim=-1)

    def forward(self, texts, owners=None):
        return self.embed(texts)


class CoOp(Learner):
    """CoOp: n_ctx shared context vectors in RoBERTa's token space, class token at the end.

    Prompt = <s> ctx_1..ctx_n " " text suffix </s>; with ctx initialized from the words of a
    template ("a sound of a"), it reproduces that template's zero-shot embedding exactly.
    Padded to the longest prompt of the call, not to 77.
    """

    def __init__(self, backbone, classes, cfg):
        super().__init__(backbone, classes, cfg)
        self.suffix = cfg.class_suffix
        emb = backbone.token_embedding
        if cfg.ctx_init:
            tok = backbone.tokenize([cfg.ctx_init])
            n = int(tok["attention_mask"].sum())
            init_ids = tok["input_ids"][0, 1:n - 1]            # drop <s> ... </s>
            ctx = emb(init_ids).detach().clone().float()
        else:
            ctx = torch.empty(cfg.n_ctx, backbone.text_dim)
            nn.init.normal_(ctx, std=0.02)
        self.n_ctx = ctx.shape[0]
        self.ctx = nn.Parameter(ctx.to(backbone.device))
        bos = backbone.tokenize(["x"])["input_ids"][:, :1]     # <s>
        self.register_buffer("sos", emb(bos).detach().clone().float(), persistent=False)   # [1, 1, 768]
        self.pad_id = int(backbone.tokenizer.pad_token_id)
        self.max_text = backbone.context_length - 1 - self.n_ctx
        self._tokens: dict[str, list[int]] = {}

    def text_tokens(self, texts: list[str]) -> list[list[int]]:
        """Token ids after <s> of " <text><suffix>" (ending with </s>), truncated to fit 77 tokens."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._tokens]
        if missing:
            tok = self.backbone.tokenize([" " + t + self.suffix for t in missing])
            for t, ids, mask in zip(missing, tok["input_ids"], tok["attention_mask"]):
                ids = ids[1:int(mask.sum())].tolist()
                if len(ids) > self.max_text:
                    ids = ids[:self.max_text - 1] + ids[-1:]
                self._tokens[t] = ids
        return [self._tokens[t] for t in texts]

    def prompts(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """inputs_embeds [N, L, 768] and attention_mask [N, L], L = longest prompt of the call."""
        tokens = self.text_tokens(texts)
        n, width = len(texts), max(len(t) for t in tokens)
        ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((n, 1 + self.n_ctx + width), dtype=torch.long)
        for row, t in enumerate(tokens):
            ids[row, :len(t)] = torch.tensor(t)
            mask[row, :1 + self.n_ctx + len(t)] = 1
        device = self.ctx.device
        with torch.no_grad():
            words = self.backbone.token_embedding(ids.to(device)).float()
        ctx = self.ctx.unsqueeze(0).expand(n, -1, -1)
        return torch.cat([self.sos.expand(n, -1, -1), ctx, words], dim=1), mask.to(device)

    def features(self, texts, owners=None):
        """[N, 512] text features before normalization (DePT's FiLM reads them)."""
        inputs, mask = self.prompts(texts)
        return self.backbone.encode_token_embeddings(inputs, mask, normalize=False)

    def forward(self, texts, owners=None):
        return F.normalize(self.features(texts, owners), dim=-1)

    def class_features(self, classes, owners, audio):
        """`class_embeddings` before normalization (DePT reads them)."""
        return self.features(classes, owners)


class CoCoOp(CoOp):
    """CoCoOp (Zhou et al., CVPR 2022): CoOp's context plus an instance-conditional token bias.

    A Meta-Net maps the audio feature x [512] of a clip to pi(x) [768] (Linear 512 -> 32, ReLU,
    Linear 32 -> 768), added to every context vector: ctx_j(x) = ctx_j + pi(x). Each clip gets its
    own prompts, so logits for clip b are scale * cos(audio_b, z_b,c) with z_b,c [B, C, 512]: a
    step costs B x C text-encoder passes (CoOp: C), which is why the paper trains with batch 1.

    With SEPT, class and neighbor embeddings entering L_intra / L_inter go through one prompt
    conditioned on the batch's mean audio feature (renormalized, so the Meta-Net sees an input on
    the sphere it is trained on): a class and its neighbors still share the very same prompt, and
    the SEPT term costs C + S passes per step whatever the batch size (a CoOp step with SEPT
    costs the same), not B x (C + S).

    Context initialization as CoOp (random, or the words of `ctx_init`); the Meta-Net has
    PyTorch's default initialization, as in the reference implementation.
    """

    conditional = True

    def __init__(self, backbone, classes, cfg):
        super().__init__(backbone, classes, cfg)
        D, W = backbone.embed_dim, backbone.text_dim
        self.meta_net = nn.Sequential(OrderedDict([
            ("linear1", nn.Linear(D, D // 16)),
            ("relu", nn.ReLU(inplace=True)),
            ("linear2", nn.Linear(D // 16, W)),
        ])).to(backbone.device)

    def forward(self, texts, owners=None, condition=None):
        """texts [N], audio features condition [B, 512] -> unit-norm embeddings [B, N, 512]."""
        return F.normalize(self.features(texts, owners, condition), dim=-1)

    def features(self, texts, owners=None, condition=None):
        """As `forward`, before normalization: [B, N, 512]."""
        if condition is None:
            raise ValueError("CoCoOp prompts depend on the audio: pass condition, audio features [B, 512]")
        inputs, mask = self.prompts(texts)                                     # [N, L, 768], [N, L]
        bias = self.meta_net(condition.to(self.ctx.device, self.ctx.dtype))    # [B, 768]
        B, (N, L, _) = bias.shape[0], inputs.shape
        # the bias lands on the context positions only (after <s>); elsewhere it is multiplied
        # by an exact 0, so a zero Meta-Net output gives CoOp's prompts bit for bit
        at_ctx = torch.zeros(L, 1, device=inputs.device, dtype=inputs.dtype)
        at_ctx[1:1 + self.n_ctx] = 1
        shifted = inputs.unsqueeze(0) + bias[:, None, None, :] * at_ctx       # [B, N, L, 768]
        z = self.backbone.encode_token_embeddings(shifted.flatten(0, 1), mask.repeat(B, 1), normalize=False)
        return z.view(B, N, -1)

    # each clip against its own class embeddings [B, C, D]

    def class_embeddings(self, classes, owners, audio):
        return self(classes, owners, condition=audio)

    def class_features(self, classes, owners, audio):
        return self.features(classes, owners, condition=audio)

    def score(self, audio, z, logit_scale):
        return logit_scale * torch.einsum("bd,bcd->bc", audio.to(z.dtype), z)

    def label_rows(self, z, labels):
        return z[torch.arange(len(labels), device=labels.device), labels]

    def regularized(self, classes, z):
        return classes * z.shape[0], z.flatten(0, 1)

    def sept_embeddings(self, step, texts, owners):
        """Classes and neighbors through the same prompt, conditioned once per batch on its mean
        audio feature (renormalized): C + S passes."""
        classes = step.classes
        mean = F.normalize(step.audio.float().mean(0, keepdim=True), dim=-1)            # [1, D]
        both = self(classes + texts, torch.cat([torch.arange(len(classes)), owners]), condition=mean)[0]
        return both[:len(classes)], both[len(classes):]                                 # [C, D], [S, D]

    def eval_logits(self, audio, classes, logit_scale, prompts_per_call):
        """Clips go through the prompts in chunks of max(1, prompts_per_call // C)."""
        owners = self.class_owners(classes)
        per_call = max(1, prompts_per_call // len(classes))
        chunks = []
        for start in range(0, len(audio), per_call):
            part = audio[start:start + per_call]
            z = self(classes, owners, condition=part).float()                          # [b, C, D]
            chunks.append(logit_scale * torch.einsum("bd,bcd->bc", part.to(z.device).float(), z))
        return torch.cat(chunks) if chunks else audio.new_zeros((0, len(classes)))


class KgCoOp(CoOp):
    """KgCoOp (Yao et al., CVPR 2023; htyao89/KgCoOp trainers/kgcoop.py): CoOp plus

        weight * (1 - mean_i cos(z_i, z0_i))

    z_i the learned embedding of class i, z0_i the frozen CLAP embedding of one hand-written
    template filled with the class (`kgcoop_anchor`, "a sound of a {}."), the template the context
    is initialized from (`ctx_init` "a sound of a" + class + `class_suffix` "."): the term is 0 at
    initialization. The reference's anchor is CLIP's one dataset template and its weight 8.0.
    """

    def __init__(self, backbone, classes, cfg):
        super().__init__(backbone, classes, cfg)
        self.weight = cfg.kgcoop_weight
        self.anchor_template = cfg.kgcoop_anchor
        self.anchor = _TextMemo(lambda texts: backbone.encode_text([self.anchor_template.format(t) for t in texts]))

    def regularizer(self, texts, embeddings):
        z0 = self.anchor(texts).to(embeddings.device)
        # float64: at initialization z and z0 agree to ~1e-6, and 1 - cos in float32 would be
        # rounding noise of 1e-7 instead of ~0 (the reference computes it in the model's precision)
        cos = F.cosine_similarity(embeddings.double(), z0.double(), dim=-1, eps=1e-7)
        return (self.weight * (1.0 - cos.mean())).float()


class Palm(Learner):
    """PALM: learnable context in the joint feature space, mixed per class with the frozen text feature.

    z = normalize((1 - s_c) * f(text) + s_c * ctx_c), s_c = sigmoid(lambda_c), f(text) the frozen
    CLAP embedding of the raw text (no template, as PALM). No gradient passes through the text
    encoder. A neighbor uses its class's context; texts of classes the learner was not trained on
    (owner -1) get their frozen feature unchanged.
    """

    def __init__(self, backbone, classes, cfg):
        super().__init__(backbone, classes, cfg)
        C, D = len(self.classes), backbone.embed_dim
        ctx = torch.empty(C, D)
        nn.init.normal_(ctx, std=0.02)
        self.ctx = nn.Parameter(ctx.to(backbone.device))
        self.lambdas = nn.Parameter(torch.rand(C).to(backbone.device))
        self.feature = _TextMemo(backbone.encode_text)

    def forward(self, texts, owners=None):
        if owners is None:
            owners = self.class_owners(texts)
        owners = owners.to(self.ctx.device)
        f = self.feature(texts).to(self.ctx.device)                       # [N, D]
        seen = owners >= 0
        idx = owners.clamp(min=0)
        s = torch.sigmoid(self.lambdas)[idx].unsqueeze(1) * seen.unsqueeze(1)   # [N, 1]
        mixed = (1 - s) * f + s * self.ctx[idx]
        return F.normalize(mixed, dim=-1)


class FiLM(nn.Module):
    """Channel-wise affine map x * scale + shift over the last axis (DePT's cwT); identity at init."""

    def __init__(self, dim: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))
        self.shift = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.to(x.dtype) + self.shift.to(x.dtype)


class DePT(Learner):
    """DePT (Zhang et al., CVPR 2024; Koorye/DePT trainers/elp_coop.py): a plug-in on a text-side
    learner (CoOp, CoCoOp, KgCoOp) that moves base-specific knowledge into an isolated head.

    Two FiLMs (scale 1, shift 0 at init) map the text and audio features *before normalization*,
    and a linear head D -> C_base classifies them:
      training  head input = [FiLM_t(text feature of each clip's label); FiLM_a(audio)] [2B, D], labels
                duplicated; loss = (1 - w) CE(cosine logits) + w CE(head logits)
      eval      base label space: (1 - w) * cosine logits + w * head(FiLM_a(audio)), logits not
                probabilities, the cosine logits at CLAP's scale and the head's unscaled, as the
                reference fuses them; any other label space (new classes, other datasets): cosine alone.
    The cosine logits and everything else (SEPT's neighbors, KgCoOp's regularizer) go through the
    base learner unchanged: `forward` is the base learner's forward. w = 0 is the base learner.
    Audio features arrive before normalization (`audio_normalized = False`): the cosine logits use
    them normalized, the head their FiLM'd raw form.
    """

    audio_normalized = False

    def __init__(self, base: Learner, cfg):
        super().__init__(base.backbone, base.classes, cfg)
        if not hasattr(base, "features"):
            raise ValueError(f"dept: {type(base).__name__} has no text features before normalization; "
                             "DePT applies to coop, cocoop and kgcoop")
        self.base = base
        self.conditional = base.conditional
        self.weight = cfg.dept_weight
        D, device = base.backbone.embed_dim, base.backbone.device
        self.film_text = FiLM(D).to(device)
        self.film_audio = FiLM(D).to(device)
        # the reference's nn.Linear with PyTorch's default initialization
        self.head = nn.Linear(D, len(self.classes)).to(device)

    def features(self, texts, owners=None, condition=None):
        return self.base.features(texts, owners, **({"condition": condition} if self.conditional else {}))

    def forward(self, texts, owners=None, condition=None):
        return self.base(texts, owners, **({"condition": condition} if self.conditional else {}))

    def regularizer(self, texts, embeddings):
        return self.base.regularizer(texts, embeddings)

    def head_parameters(self) -> list[nn.Parameter]:
        """The head's and FiLMs' parameters (DePT trains them at `dept_lr_mult` x the prompt's lr)."""
        return [*self.film_text.parameters(), *self.film_audio.parameters(), *self.head.parameters()]

    def prompt_parameters(self) -> list[nn.Parameter]:
        return list(self.base.parameters())

    def head_training_logits(self, text: torch.Tensor, audio: torch.Tensor, labels: torch.Tensor):
        """text features of each clip's label [B, D] and audio features [B, D], both before
        normalization -> head logits [2B, C] and their labels [2B]."""
        both = torch.cat([self.film_text(text), self.film_audio(audio.to(text.dtype))])
        return self.head(both), torch.cat([labels, labels])

    def fuse(self, cosine_logits: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """Base label space at evaluation: (1 - w) * cosine logits [N, C] + w * head logits [N, C]."""
        head = self.head(self.film_audio(audio.to(cosine_logits.dtype)))
        return (1 - self.weight) * cosine_logits + self.weight * head

    def step_loss(self, audio, labels, classes, logit_scale):
        """(1 - w) CE(cosine logits) + w CE(head logits) + the base's regularizer; audio [B, D]
        before normalization. The head learns from the text feature of each clip's label and from
        the clip (elp_coop.py)."""
        base = self.base
        unit = F.normalize(audio.float(), dim=-1)
        raw_text = base.class_features(classes, torch.arange(len(classes)), unit)   # [C, D] or [B, C, D]
        z = F.normalize(raw_text, dim=-1)
        ce = F.cross_entropy(base.score(unit, z, logit_scale).float(), labels)
        parts = {"ce": ce.item()}
        head_logits, head_labels = self.head_training_logits(base.label_rows(raw_text, labels), audio, labels)
        head_ce = F.cross_entropy(head_logits.float(), head_labels)
        parts["head_ce"] = head_ce.item()
        ce = (1 - self.weight) * ce + self.weight * head_ce
        loss = ce + self.regularizer(*base.regularized(classes, z))
        return Step(loss, parts, classes, z, unit)

    def sept_embeddings(self, step, texts, owners):
        return self.base.sept_embeddings(step, texts, owners)

    def eval_logits(self, audio, classes, logit_scale, prompts_per_call):
        """In its own (base) label space (1 - w) * cosine logits + w * head logits; in any other
        (new classes, other datasets) the cosine logits alone."""
        logits = self.base.eval_logits(F.normalize(audio.float(), dim=-1), classes, logit_scale, prompts_per_call)
        if list(classes) == self.classes:
            logits = self.fuse(logits, audio.to(logits.device).float())
        return logits

    def param_groups(self, cfg):
        """The prompt's at lr; the head's and FiLMs' at dept_lr_mult x lr (DePT's STAGED_LR over
        its 'linear_probe' and 'film' layers). Both groups take the run's weight decay (dassl's 5e-4);
        an audio prompt's FiLM is its own group and keeps ASPL's 0 (AudioPrompt.param_groups)."""
        return [{"params": self.prompt_parameters()},
                {"params": self.head_parameters(), "lr": cfg.lr * cfg.dept_lr_mult}]


LEARNERS: dict[str, type[Learner]] = {
    "zeroshot": ZeroShot,
    "coop": CoOp,
    "cocoop": CoCoOp,
    "kgcoop": KgCoOp,
    "palm": Palm,
}


# the text-side learners DePT plugs into (Koorye/DePT ships CoOp, CoCoOp, KgCoOp and MaPLe variants)
DEPT_METHODS = ("coop", "cocoop", "kgcoop")


def audio_normalized(cfg) -> bool:
    """Whether the learner `cfg` builds reads unit-norm audio features (its `audio_normalized`),
    known before the learner exists: the audio cache is made first."""
    return not getattr(cfg, "dept", False)


def method_label(cfg) -> str:
    """The method as run names spell it: the method, "-dept" appended for a DePT-wrapped one."""
    return cfg.method + ("-dept" if getattr(cfg, "dept", False) else "")


def build_learner(method: str, backbone, classes: list[str], cfg) -> Learner:
    """The learner of `method`; with `cfg.dept`, wrapped in DePT (its head made after the base's
    parameters, so a seed gives the base learner the same initialization with or without DePT)."""
    if method not in LEARNERS:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(LEARNERS)}")
    learner = LEARNERS[method](backbone, classes, cfg)
    if getattr(cfg, "dept", False):
        if method not in DEPT_METHODS:
            raise ValueError(f"dept applies to {', '.join(DEPT_METHODS)}, not method {method!r}")
        learner = DePT(learner, cfg)
    return learner
