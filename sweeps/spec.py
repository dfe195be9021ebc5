"""What a bench runs: `BenchSpec` (the grid and the options every run shares), its options and row labels.

`BenchSpec` is also the `train-sweep` flow's parameter set: comma-separated strings and lists
both validate, so the CLI's flags and `prefect deployment run --param methods=coop,palm` give the
same spec. A spec that cannot run raises `BenchError`, whose message names the parameter.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from sept.errors import SeptError
from sept.trainer.config import METHOD_DEFAULTS, ConfigError, parse_overrides

PROTOCOLS = ("base2new", "cross")
ARMS = ("off", "on", "random")
# row label = method label + arm suffix
METHOD_LABELS = {"zeroshot": "Zero-shot", "coop": "CoOp", "cocoop": "CoCoOp", "kgcoop": "KgCoOp", "palm": "PALM",
                 "dept": "DePT"}
ARM_SUFFIX = {"off": "", "on": " + SEPT", "random": " + random neighbors"}
# options a bench sets itself, from its own flags and its grid
BENCH_SET = ("method", "seed", "fold", "neighbors", "dataset_root", "base_to_new", "targets", "run_name", "out_dir")


class BenchError(SeptError, ValueError):
    """The bench cannot run as asked; the message names the parameter, dataset or file."""


def _comma_list(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


class BenchSpec(BaseModel):
    """What a bench runs: the grid and the options every run shares. Also the flow's parameters."""

    model_config = ConfigDict(extra="forbid")

    protocol: Literal["base2new", "cross"] = "base2new"
    datasets_root: str
    checkpoint: str = ""
    methods: list[str] = ["coop"]
    sept: list[str] = ["off", "on"]            # arms
    neighbors: str | None = None               # tag of the per-dataset versions of the "on" arm
    random_neighbors: str = "random"           # tag of the "random" arm's versions
    seeds: list[int] = [1]
    datasets: list[str] = []                   # base2new; [] = every benchmark dataset present
    folds: str = "all"                         # all | K (the first K) | k1,k2,... (those)
    split: str = "sorted"                      # sorted | shuffled | zebra | file:PATH
    split_seed: int = 42
    source: str | None = None                  # cross
    targets: list[str] = []                    # cross
    options: list[str] = []                    # key=value for every run; METHOD.key=value for one method
    out: str = "bench"
    store: str | None = None

    @field_validator("methods", "sept", "seeds", "datasets", "targets", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        # comma-separated on the command line and in deployment parameters
        return _comma_list(value)

    @field_validator("options", mode="before")
    @classmethod
    def _option_words(cls, value: Any) -> Any:
        # "epochs=1 shots=2" as one deployment parameter
        return value.split() if isinstance(value, str) else value

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, value: list[str]) -> list[str]:
        unknown = [m for m in value if m not in METHOD_DEFAULTS]
        if unknown or not value:
            raise ValueError(f"unknown method(s) {', '.join(map(repr, unknown))}; known: {', '.join(METHOD_DEFAULTS)}"
                             if unknown else "give at least one method")
        return list(dict.fromkeys(value))

    @field_validator("sept")
    @classmethod
    def _known_arms(cls, value: list[str]) -> list[str]:
        unknown = [a for a in value if a not in ARMS]
        if unknown or not value:
            raise ValueError(f"unknown arm(s) {', '.join(map(repr, unknown))}; known: {', '.join(ARMS)}"
                             if unknown else "give at least one arm (off, on, random)")
        return list(dict.fromkeys(value))

    @field_validator("seeds")
    @classmethod
    def _some_seed(cls, value: list[int]) -> list[int]:
        if not value:
            raise ValueError("give at least one seed")
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _consistent(self) -> "BenchSpec":
        if "on" in self.sept and not self.neighbors:
            raise ValueError("the 'on' arm needs the neighbor tag (--neighbors TAG)")
        if self.protocol == "cross":
            if not self.source:
                raise ValueError("cross: give the source dataset (--source)")
            if not self.targets:
                raise ValueError("cross: give at least one target dataset (--targets)")
            if self.source in self.targets:
                raise ValueError(f"cross: the source {self.source!r} is also a target")
        parse_options(self.options, self.methods)   # refuses a malformed option early
        return self


def spec_from(values: dict[str, Any]) -> BenchSpec:
    """A validated spec from CLI flags or flow parameters; `BenchError` naming each bad parameter."""
    try:
        return BenchSpec(**values)
    except ValidationError as e:
        parts = []
        for item in e.errors():
            name = ".".join(str(x) for x in item["loc"])
            parts.append(f"parameter {name!r}: {item['msg'].removeprefix('Value error, ')}" if name
                         else item["msg"].removeprefix("Value error, "))
        raise BenchError("; ".join(parts)) from None


def parse_options(options: list[str], methods: list[str]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """["epochs=2", "palm.lr=0.1"] -> ({"epochs": 2}, {"palm": {"lr": 0.1}})."""
    shared: dict[str, Any] = {}
    scoped: dict[str, dict[str, Any]] = {}
    try:
        for key, value in parse_overrides(list(options)).items():
            head, dot, rest = key.partition(".")
            if dot:
                if head not in methods:
                    raise BenchError(f"option {key}={value!r}: {head!r} is not one of the bench's methods "
                                     f"({', '.join(methods)})")
                scoped.setdefault(head, {})[rest] = value
            else:
                shared[key] = value
    except ConfigError as e:
        raise BenchError(str(e)) from None
    for key in BENCH_SET:
        if key in shared or any(key in s for s in scoped.values()):
            raise BenchError(f"option {key!r} is set by the bench itself (use its own flag)")
    return shared, scoped


def row_label(method: str, arm: str) -> str:
    """The table row of a method and arm: "CoOp + SEPT", "PALM + random neighbors"."""
    return METHOD_LABELS.get(method, method) + ARM_SUFFIX[arm]
