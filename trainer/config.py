"""Training configuration: one plain dataclass, defaults from PALM, per-method overrides.

Layers, later wins: dataclass defaults < METHOD_DEFAULTS[method] < YAML file < command line
`key=value` overrides. Values given explicitly (YAML or command line) are never replaced by a
method default.
"""
from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A configuration value or file is invalid; the message names the parameter."""


@dataclass
class TrainConfig:
    # data: a PALM-layout dataset folder (train.csv/test.csv), or explicit CSVs
    dataset_root: str = ""
    dataset_name: str = ""                 # default: the folder name of dataset_root
    fold: int | None = None                # csv_files/train_<fold>.csv, test_<fold>.csv
    train_csv: str = ""
    test_csv: str = ""
    shots: int = 16                        # per class; <= 0 uses every training clip
    base_to_new: bool = False
    n_base: int | None = None              # None: first ceil(C/2) sorted classes are base
    targets: list[str] = field(default_factory=list)   # cross-dataset: dataset folders to evaluate on
    # backbone
    checkpoint: str = ""
    amodel: str = "HTSAT-tiny"
    enable_fusion: bool = False
    tokenizer: str | None = None
    device: str = "auto"                   # auto: cuda if available, else cpu
    logit_scale: float | None = None       # None: CLAP's own exp(logit_scale_a)
    # audio-embedding cache
    cache_dir: str = ".sept/audio-cache"
    crop: str = "deterministic"            # clips over 10 s: centered 10 s window (the only cacheable policy)
    # learner
    method: str = "coop"                   # zeroshot | coop | cocoop | kgcoop | palm
    templates: str = "default"             # template set for zero-shot and KgCoOp's anchor
    ensemble: bool = True                  # zero-shot: mean over the template set, else its first template
    n_ctx: int = 16
    ctx_init: str = ""                     # e.g. "a sound of a": word init, n_ctx = its token count
    class_suffix: str = "."                # text after the class token ("<ctx> dog.")
    kgcoop_weight: float = 8.0
    # optimization (PALM: SGD lr 0.05 momentum 0.9, 50 epochs, batch 16)
    epochs: int = 50
    batch_size: int = 16
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_schedule: str = "constant"          # constant | cosine
    seed: int = 0
    # SEPT
    neighbors: str | None = None           # DATASET@REF in the neighbor store
    store: str | None = None               # store root; None: $SEPT_STORE or ./neighbor-store
    margin_templates: str = "default"      # for margins computed when the store has none
    sept_lambda: float = 1.0
    sept_intra: bool = True
    sept_inter: bool = True
    sept_zero_margins: bool = False
    neighbor_budget: int = 8               # neighbor prompts per step, raised to ceil(K / steps) so an epoch visits all
    # output
    out_dir: str = "runs"
    run_name: str = ""                     # default: <dataset>-<method>[-sept]-seed<seed>
    eval_every: int = 0                    # 0: evaluate after the last epoch only

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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

_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_HINTS = typing.get_type_hints(TrainConfig)


def _coerce(name: str, value: Any) -> Any:
    """Check/convert `value` to the declared type of field `name`."""
    hint = _HINTS[name]
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if args and typing.get_origin(hint) is not list else hint
    if value is None:
        if optional:
            return None
        raise ConfigError(f"parameter {name!r} cannot be empty")
    if typing.get_origin(base) is list or base is list:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list):
            raise ConfigError(f"parameter {name!r} must be a list, got {value!r}")
        return [str(v) for v in value]
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"parameter {name!r} must be true or false, got {value!r}")
    if base is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ConfigError(f"parameter {name!r} must be an integer, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"parameter {name!r} must be an integer, got {value!r}") from None
    if base is float:
        if isinstance(value, bool):
            raise ConfigError(f"parameter {name!r} must be a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"parameter {name!r} must be a number, got {value!r}") from None
    if base is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"parameter {name!r} must be a string, got {value!r}")
        return str(value)
    return value


def _check_keys(values: dict[str, Any], origin: str) -> None:
    unknown = [k for k in values if k not in _FIELDS]
    if unknown:
        raise ConfigError(f"{origin}: unknown parameter(s) {', '.join(map(repr, unknown))}; "
                          f"known: {', '.join(sorted(_FIELDS))}")


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
    _check_keys(out, "command line")
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
    _check_keys(data, str(path))
    return data


def make_config(path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None) -> TrainConfig:
    """Build the config: defaults < method defaults < YAML `path` < `overrides`."""
    given: dict[str, Any] = {}
    if path:
        given.update(read_yaml(path))
    if isinstance(overrides, dict):
        _check_keys(overrides, "overrides")
        given.update(overrides)
    elif overrides:
        given.update(parse_overrides(overrides))
    method = str(given.get("method", TrainConfig.method))
    if method not in METHOD_DEFAULTS:
        raise ConfigError(f"parameter 'method': unknown method {method!r}; known: {', '.join(METHOD_DEFAULTS)}")
    values = {**METHOD_DEFAULTS[method], **given}
    cfg = TrainConfig(**{k: _coerce(k, v) for k, v in values.items()})
    validate(cfg)
    return cfg


def validate(cfg: TrainConfig) -> None:
    checks = [
        (cfg.batch_size >= 1, "batch_size", "must be >= 1"),
        (cfg.epochs >= 0, "epochs", "must be >= 0"),
        (cfg.lr > 0, "lr", "must be > 0"),
        (cfg.n_ctx >= 1, "n_ctx", "must be >= 1"),
        (cfg.neighbor_budget >= 1, "neighbor_budget", "must be >= 1"),
        (cfg.sept_lambda >= 0, "sept_lambda", "must be >= 0"),
        # the audio cache keeps one embedding per clip: a random crop would be frozen at its first draw
        (cfg.crop == "deterministic", "crop",
         "must be deterministic (audio embeddings are cached once per clip, so a random crop would not vary)"),
        (cfg.lr_schedule in ("constant", "cosine"), "lr_schedule", "must be constant or cosine"),
        (cfg.n_base is None or cfg.n_base >= 1, "n_base", "must be >= 1"),
        (cfg.sept_intra or cfg.sept_inter, "sept_intra/sept_inter", "at least one must be true"),
    ]
    for ok, name, why in checks:
        if not ok:
            raise ConfigError(f"parameter {name!r} {why}")
    if cfg.method not in METHOD_DEFAULTS:
        raise ConfigError(f"parameter 'method': unknown method {cfg.method!r}; known: {', '.join(METHOD_DEFAULTS)}")


def config_from_dict(values: dict[str, Any]) -> TrainConfig:
    """A config saved by `to_dict` (e.g. in a run's config.json), checked."""
    _check_keys(values, "saved config")
    return TrainConfig(**{k: _coerce(k, v) for k, v in values.items()})


def dump(cfg: TrainConfig) -> str:
    return json.dumps(cfg.to_dict(), indent=2, sort_keys=True)
