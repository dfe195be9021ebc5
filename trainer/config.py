"""Training configuration: one pydantic model, defaults from PALM, per-method overrides.

Layers, later wins: field defaults < the recipe's method defaults < YAML file < command line
`key=value` overrides. `recipe=palm` (the default): METHOD_DEFAULTS[method] (< DEPT_DEFAULTS[method]
with dept=true), PALM's optimizer settings for every method with the project's departures;
`recipe=reference`: `reference_defaults` -- each method's own paper's settings, each value with
the file it comes from. The resolved values are what a run's saved config records.
Values given explicitly (YAML or command line) are never replaced by a
method default. Validation, messages naming the field, JSON dumps and the JSON schema
(`TrainConfig.model_json_schema()`) all come from pydantic.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sept.errors import SeptError
from sept.splits import SplitPolicy


class ConfigError(SeptError, ValueError):
    """A configuration value or file is invalid; the message names the parameter."""


class TrainConfig(BaseModel):
    # Unknown keys are refused; numbers given for string fields (run_name=7) stay strings;
    # assignment is validated too, so `cfg.model_copy(update=...)` is the only unchecked path.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, coerce_numbers_to_str=True)

    # data: a PALM-layout dataset folder (train.csv/test.csv), or explicit CSVs
    dataset_root: str = ""
    dataset_name: str = ""                 # default: the folder name of dataset_root
    fold: int | None = None                # csv_files/train_<fold>.csv, test_<fold>.csv
    train_csv: str = ""
    test_csv: str = ""
    shots: int = 16                        # per class; <= 0 uses every training clip
    # a few-shot split file (sept.trainer.fewshot): train on exactly the clips it names instead of
    # drawing `shots` per class with `seed`; the run's identity takes its content's sha256, not its path
    fewshot_file: str | None = None
    base_to_new: bool = False
    split: SplitPolicy = "sorted"                # base/new split policy (sept.splits): sorted | shuffled | zebra | file:PATH
    split_seed: int = 42                   # seed of the shuffled policy
    n_base: int | None = Field(None, ge=1)  # base classes of the sorted/shuffled split; None: the policy's half
    allow_visible_new: bool = False        # leak ablation: train on neighbors that saw new (or target) classes
    targets: list[str] = Field(default_factory=list)   # cross-dataset: dataset folders to evaluate on
    # backbone
    checkpoint: str = ""
    amodel: str = "HTSAT-tiny"
    enable_fusion: bool = False
    tokenizer: str | None = None
    trust_checkpoint: bool = Field(False, description=(
        "allow loading a pickled .pt CLAP checkpoint, which can run code; prefer `sept clap convert`"))
    device: str = "auto"                   # auto: cuda if available, else cpu
    precision: Literal["fp32", "bf16"] = "fp32"   # bf16: autocast of the training step, on CUDA only
    logit_scale: float | None = None       # None: CLAP's own exp(logit_scale_a); PALM's code uses a fixed 100
    # audio-embedding cache
    cache_dir: str = ".sept/audio-cache"
    crop: str = "deterministic"            # clips over 10 s: centered 10 s window (the only cacheable policy)
    # learner
    method: str = "coop"                   # zeroshot | coop | cocoop | kgcoop | palm
    templates: str = "default"             # template set for zero-shot
    ensemble: bool = True                  # zero-shot: mean over the template set, else its first template
    n_ctx: int = Field(16, ge=1)
    ctx_init: str = ""                     # e.g. "a sound of a": word init, n_ctx = its token count
    class_suffix: str = "."                # text after the class token ("<ctx> dog.")
    kgcoop_weight: float = 8.0             # KgCoOp's paper and scripts (W=8.0)
    kgcoop_anchor: str = "a sound of a {}."   # KgCoOp's frozen anchor template; ctx_init + " {}" + class_suffix starts on it
    # DePT (Koorye/DePT): a head + FiLM beside the cosine logits of coop / cocoop / kgcoop
    dept: bool = False
    dept_weight: float = Field(0.7, ge=0, le=1)   # LINEAR_PROBE.WEIGHT (DePT train.py): loss and eval fusion
    dept_lr_mult: float = Field(6.5, gt=0)        # OPTIM.LR_EXP (DePT train.py): head and FiLM lr = lr x 6.5
    # audio-side prompts (ASPL, trainer/audio_prompts.py): FiLM inside HTSAT, on top of any method;
    # trained at the prompt's lr in the same SGD (the reference's main.py), gradient norm clipped at 1.0
    audio_prompt: Literal["none", "aspl", "aspl+"] = "none"
    # optimization (PALM: SGD lr 0.05 momentum 0.9, 50 epochs, batch 16)
    # palm: PALM's settings (METHOD_DEFAULTS, DEPT_DEFAULTS); reference: each method's paper's (reference_defaults)
    recipe: Literal["palm", "reference"] = "palm"
    epochs: int = Field(50, ge=0)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(0.05, gt=0)
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_schedule: Literal["constant", "cosine"] = "constant"
    warmup_epochs: int = Field(0, ge=0)    # dassl's constant warmup: these first epochs at warmup_lr
    warmup_lr: float = Field(1e-5, gt=0)   # (the cosine then starts at lr, T_max = epochs, as dassl's)
    seed: int = 0
    # SEPT
    neighbors: str | None = None           # DATASET@REF in the neighbor store
    store: str | None = None               # store root; None: $SEPT_STORE or ./neighbor-store
    margin_templates: str = "default"      # for margins computed when the store has none
    sept_lambda: float = Field(1.0, ge=0)
    sept_intra: bool = True
    sept_inter: bool = True
    sept_zero_margins: bool = False
    neighbor_budget: int = Field(8, ge=1)              # neighbor prompts per step, raised to ceil(K / steps) so an epoch visits all
    # output
    out_dir: str = "runs"
    run_name: str = ""                     # default: <dataset>-<method>[-sept]-seed<seed>
    eval_every: int = 0                    # 0: evaluate after the last epoch only

    @field_validator("targets", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        # `targets=a,b` on the command line
        return [v for v in value.split(",") if v] if isinstance(value, str) else value

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        if value not in METHOD_DEFAULTS:
            raise ValueError(f"unknown method {value!r}; known: {', '.join(METHOD_DEFAULTS)}")
        return value

    @field_validator("kgcoop_anchor")
    @classmethod
    def _one_class_slot(cls, value: str) -> str:
        if value.count("{}") != 1:
            raise ValueError("must hold exactly one {} where the class name goes, e.g. 'a sound of a {}.'")
        return value

    @field_validator("crop")
    @classmethod
    def _cacheable_crop(cls, value: str) -> str:
        # the audio cache keeps one embedding per clip: a random crop would be frozen at its first draw
        if value != "deterministic":
            raise ValueError("must be deterministic (audio embeddings are cached once per clip, "
                             "so a random crop would not vary)")
        return value

    @model_validator(mode="after")
    def _some_sept_term(self) -> "TrainConfig":
        if not (self.sept_intra or self.sept_inter):
            raise ValueError("sept_intra/sept_inter: at least one must be true")
        if self.dept and self.method not in DEPT_DEFAULTS:
            raise ValueError(f"dept applies to methods {', '.join(DEPT_DEFAULTS)}, not {self.method!r}")
        if self.base_to_new and self.targets:
            # the cross protocol trains on every class of the source; base-to-new holds some out
            raise ValueError("targets (cross-dataset) trains on all classes of the source: "
                             "set base_to_new=false, or drop targets")
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def replace(self, **changes: Any) -> "TrainConfig":
        """A validated copy with `changes` applied (the config of another seed, say)."""
        return checked(lambda: TrainConfig(**{**self.model_dump(), **changes}), "config")


# Per-method defaults over the dataclass ones (never over explicitly given values).
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "zeroshot": {"epochs": 0},
    "coop": {},
    # CoCoOp's paper: 4 context tokens initialized from "a photo of a", SGD lr 0.002 at batch 1
    # for 10 epochs. Here at the project's batch 16 (every step encodes B x C prompts, 16x CoOp's
    # text-encoder work), lr scaled linearly (0.002 x 16) and the paper's 10 epochs, which show
    # each clip as often as the paper does.
    "cocoop": {"n_ctx": 4, "ctx_init": "a sound of a", "lr": 0.032, "epochs": 10},
    "kgcoop": {"ctx_init": "a sound of a"},
    "palm": {},
}

# dept=true: DePT's own settings, over METHOD_DEFAULTS (never over given values). Files of Koorye/DePT:
# SGD, cosine schedule, one warmup epoch at constant lr 1e-5, 10 epochs, batch 4, lr 0.0035:
#   configs/trainers/ExtrasLinearProbeCoOp/vit_b16_ep10_bs4_lr35.yaml (coop),
#   configs/trainers/ExtrasLinearProbeKgCoOp/vit_b16_ep10_ctxv1_bs4_lr35.yaml (kgcoop: also 4 context
#   tokens from "a photo of a" -> "a sound of a", and KgCoOp's weight W = 2.0 instead of KgCoOp's own 8.0);
# head/FiLM at 6.5x the prompt lr and w = 0.7: train.py extend_cfg (dept_lr_mult, dept_weight defaults);
# weight decay 5e-4 and momentum 0.9: dassl's defaults (dassl/config/defaults.py), which DePT keeps.
_DEPT_OPTIM = {"epochs": 10, "batch_size": 4, "lr": 0.0035, "lr_schedule": "cosine", "warmup_epochs": 1,
               "warmup_lr": 1e-5, "weight_decay": 5e-4, "momentum": 0.9}
DEPT_DEFAULTS: dict[str, dict[str, Any]] = {
    "coop": dict(_DEPT_OPTIM),
    "kgcoop": {**_DEPT_OPTIM, "ctx_init": "a sound of a", "kgcoop_weight": 2.0},
    # configs/trainers/ExtrasLinearProbeCoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml: lr 0.002 at batch 1,
    # 10 epochs, cosine + 1 warmup epoch, 4 tokens from "a photo of a". Batch 16 at lr 0.032 here, the
    # project's CoCoOp departure (see METHOD_DEFAULTS["cocoop"]): the paper's batch 1 costs 16x the steps.
    "cocoop": {**_DEPT_OPTIM, "batch_size": 16, "lr": 0.032, "n_ctx": 4, "ctx_init": "a sound of a"},
}


RECIPES = ("palm", "reference")

# recipe=reference: each method's own repository. CoOp, CoCoOp (KaiyangZhou/CoOp) and KgCoOp
# (htyao89/KgCoOp) train with dassl, whose defaults (dassl/config/defaults.py) give SGD momentum 0.9
# and weight decay 5e-4 where a config does not set them; their configs all set a cosine schedule
# after one warm-up epoch at constant lr 1e-5 (OPTIM.WARMUP_EPOCH 1, WARMUP_TYPE constant,
# WARMUP_CONS_LR 1e-5). Backbone-specific entries (image size, ViT/RN50) have no CLAP counterpart.
_DASSL_OPTIM = {"lr_schedule": "cosine", "warmup_epochs": 1, "warmup_lr": 1e-5, "weight_decay": 5e-4,
                "momentum": 0.9}
REFERENCE_DEFAULTS: dict[str, dict[str, Any]] = {
    "zeroshot": {"epochs": 0},
    # CoOp: configs/trainers/CoOp/rn50*.yaml: SGD lr 0.002, batch 32; the epochs follow the shots
    # (coop_epochs); 16 context tokens from random init (scripts/coop/main.sh NCTX=16, no CTX_INIT)
    "coop": {**_DASSL_OPTIM, "lr": 0.002, "batch_size": 32, "n_ctx": 16, "ctx_init": ""},
    # CoCoOp: configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml: SGD lr 0.002, batch 1,
    # 10 epochs, N_CTX 4, CTX_INIT "a photo of a" (here "a sound of a")
    "cocoop": {**_DASSL_OPTIM, "lr": 0.002, "batch_size": 1, "epochs": 10, "n_ctx": 4, "ctx_init": "a sound of a"},
    # KgCoOp: configs/trainers/KgCoOp/vit_b16_ep100_ctxv1.yaml: SGD lr 0.002, batch 128, 100 epochs,
    # CTX_INIT True ("a photo of a", here "a sound of a"); scripts/base2new_train.sh: W=8.0
    "kgcoop": {**_DASSL_OPTIM, "lr": 0.002, "batch_size": 128, "epochs": 100, "ctx_init": "a sound of a",
               "kgcoop_weight": 8.0},
    # PALM (asif-hanif/palm): scripts/<dataset>.sh: --lr 0.05 --batch_size 16 --n_epochs 50
    "palm": {"lr": 0.05, "batch_size": 16, "epochs": 50},
}


def coop_epochs(shots: int) -> int:
    """CoOp's config for a shot count (COOP.md): 1 shot rn50_ep50.yaml (50 epochs), 2 and 4 shots
    rn50_ep100.yaml (100), 8 and 16 shots rn50.yaml (MAX_EPOCH 200). Counts CoOp did not run take
    the config of the next count up; every clip (shots <= 0) takes rn50.yaml's 200."""
    if 0 < shots <= 1:
        return 50
    if 0 < shots <= 4:
        return 100
    return 200


def reference_defaults(method: str, dept: bool = False, shots: int = 16) -> dict[str, Any]:
    """recipe=reference: the method's own paper's settings (never over given values)."""
    values = dict(REFERENCE_DEFAULTS[method])
    if method == "coop":
        values["epochs"] = coop_epochs(shots)
    if dept:
        # DePT's own files (DEPT_DEFAULTS), with its CoCoOp config as written:
        # configs/trainers/ExtrasLinearProbeCoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml: lr 0.002 at batch 1
        values.update(DEPT_DEFAULTS[method])
        if method == "cocoop":
            values.update(batch_size=1, lr=0.002)
    return values


def _error_text(error: ValidationError, origin: str) -> str:
    parts = []
    for item in error.errors():
        name = ".".join(str(x) for x in item["loc"])
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            msg = f"unknown parameter; known: {', '.join(sorted(TrainConfig.model_fields))}"
        given = item.get("input")
        shown = "" if item["type"] == "extra_forbidden" or isinstance(given, (dict, TrainConfig)) else f" (got {given!r})"
        parts.append(f"parameter {name!r}: {msg}{shown}" if item["loc"] else msg)
    return f"{origin}: " + "; ".join(parts)


def checked(build, origin: str) -> TrainConfig:
    try:
        return build()
    except ValidationError as e:
        raise ConfigError(_error_text(e, origin)) from None


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """["epochs=2", "method=palm", "targets=a,b"] -> {"epochs": "2", ...} (typed later)."""
    import yaml

    out: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value")
        key, raw = item.split("=", 1)
        key = key.strip().replace("-", "_")
        # YAML scalars give "null" -> None and numbers/bools; strings stay verbatim
        value = yaml.safe_load(raw) if raw.strip() else ""
        out[key] = raw if isinstance(value, (dict, list)) or isinstance(value, str) else value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of parameters at the top level")
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    return data


def make_config(path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None) -> TrainConfig:
    """Build the config: defaults < method defaults < YAML `path` < `overrides`."""
    given: dict[str, Any] = {}
    if path:
        given.update(read_yaml(path))
    if isinstance(overrides, dict):
        given.update(overrides)
    elif overrides:
        given.update(parse_overrides(overrides))
    method = str(given.get("method", TrainConfig.model_fields["method"].default))
    if method not in METHOD_DEFAULTS:
        raise ConfigError(f"parameter 'method': unknown method {method!r}; known: {', '.join(METHOD_DEFAULTS)}")
    values = {**METHOD_DEFAULTS[method], **given}
    cfg = checked(lambda: TrainConfig(**values), str(path) if path else "config")
    if cfg.recipe == "reference":
        # the paper's settings replace PALM's (and the project's departures) under the given values;
        # CoOp's epochs follow the resolved shot count
        values = {**reference_defaults(method, cfg.dept, cfg.shots), **given}
        return checked(lambda: TrainConfig(**values), str(path) if path else "config")
    if cfg.dept:
        # DePT's own settings sit between the method's and the given values
        values = {**METHOD_DEFAULTS[method], **DEPT_DEFAULTS[method], **given}
        cfg = checked(lambda: TrainConfig(**values), str(path) if path else "config")
    return cfg


def config_from_dict(values: dict[str, Any]) -> TrainConfig:
    """A config saved by `to_dict` (e.g. in a run's config.json), checked."""
    return checked(lambda: TrainConfig(**values), "saved config")


def dump(cfg: TrainConfig) -> str:
    return json.dumps(cfg.to_dict(), indent=2, sort_keys=True)


# fields that say where a run's outputs go or how often it reports, not what it computes
# trust_checkpoint only permits a way of reading the checkpoint; the weights (and the fingerprint) are the same
HASH_EXCLUDED = ("out_dir", "run_name", "cache_dir", "device", "eval_every", "trust_checkpoint")


def config_hash(config: TrainConfig | dict[str, Any]) -> str:
    """The identity of a run: sha256 (hex, 16 chars) of the resolved config without HASH_EXCLUDED.

    A saved config is re-validated first, so fields added to TrainConfig later (with defaults)
    do not change the hash of an existing run. Sweeps skip a run whose results.json holds a
    config of the same hash."""
    cfg = config if isinstance(config, TrainConfig) else config_from_dict(config)
    values = {k: v for k, v in cfg.to_dict().items() if k not in HASH_EXCLUDED}
    # PALM's recipe, the default, stays out: runs from before the field existed keep their identity
    if values.get("recipe") == "palm":
        del values["recipe"]
    # a few-shot file counts by its content: the same file under another path (another machine's
    # checkout) is the same run, an edited file another one; without one, the key stays out, so
    # runs that draw their clips keep the identity they had before the field existed
    if values.pop("fewshot_file", None) is not None:
        values["fewshot_sha256"] = fewshot_sha256(cfg.fewshot_file)
    blob = json.dumps(values, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def fewshot_sha256(path: str | Path) -> str:
    """sha256 (hex) of a few-shot file's bytes: what a run's identity and runs.csv record of it."""
    path = Path(path).expanduser()
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as e:
        raise ConfigError(f"parameter 'fewshot_file': cannot read {path} ({e.strerror or type(e).__name__})") from None
