"""What a bench runs: `BenchSpec` (the grid and the options every run shares), its options and row labels.

A `--methods` entry names a method's whole identity, `MethodId`: `[dept:]BASE[+aspl|+aspl+][@RECIPE]`,
e.g. `coop`, `dept:coop`, `coop+aspl`, `dept:kgcoop+aspl+`, `kgcoop@reference`; an entry without
`@RECIPE` takes the bench's `recipe`. A run's identity is read back from its resolved config
(method, dept, audio_prompt, recipe), so an option such as `dept=true` is named in its row too.
Its `token` (`dept:coop+aspl@reference`; the recipe only when not PALM's) keys rows and runs.csv.

`BenchSpec` is also the `train-sweep` flow's parameter set: comma-separated strings and lists
both validate, so the CLI's flags and `prefect deployment run --param methods=coop,palm` give the
same spec. A spec that cannot run raises `BenchError`, whose message names the parameter.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from sept.errors import SeptError
from sept.trainer.config import DEPT_DEFAULTS, METHOD_DEFAULTS, RECIPES, ConfigError, parse_overrides

PROTOCOLS = ("base2new", "cross")
ARMS = ("off", "on", "random")
# row label = method label + arm suffix
METHOD_LABELS = {"zeroshot": "Zero-shot", "coop": "CoOp", "cocoop": "CoCoOp", "kgcoop": "KgCoOp", "palm": "PALM",
                 "dept": "DePT"}
ARM_SUFFIX = {"off": "", "on": " + SEPT", "random": " + random neighbors"}
AUDIO_PROMPT_LABELS = {"aspl": "ASPL", "aspl+": "ASPL+"}
DEFAULT_RECIPE = "palm"
# options a bench sets itself, from its own flags and its grid
BENCH_SET = ("method", "seed", "fold", "neighbors", "dataset_root", "base_to_new", "targets", "run_name", "out_dir")


class BenchError(SeptError, ValueError):
    """The bench cannot run as asked; the message names the parameter, dataset or file."""


@dataclass(frozen=True)
class MethodId:
    """What a row ran: the base method, DePT on it or not, the audio-side prompt and the recipe."""

    base: str
    dept: bool = False
    audio_prompt: str = "none"          # none | aspl | aspl+
    recipe: str = DEFAULT_RECIPE        # palm | reference (sept.trainer.config.RECIPES)

    @classmethod
    def parse(cls, text: str, recipe: str = DEFAULT_RECIPE) -> "MethodId":
        """`[dept:]BASE[+aspl|+aspl+][@RECIPE]`; ValueError naming the entry and what is wrong."""
        entry = text.strip()
        body, at, given_recipe = entry.partition("@")
        if at:
            if given_recipe not in RECIPES:
                raise ValueError(f"method {entry!r}: unknown recipe {given_recipe!r}; known: {', '.join(RECIPES)}")
            recipe = given_recipe
        dept = body.startswith("dept:")
        body = body.removeprefix("dept:")
        base, plus, audio = body.partition("+")
        if base not in METHOD_DEFAULTS:
            raise ValueError(f"method {entry!r}: unknown method {base!r}; known: {', '.join(METHOD_DEFAULTS)} "
                             "(written [dept:]METHOD[+aspl|+aspl+][@palm|@reference])")
        if plus and audio not in AUDIO_PROMPT_LABELS:
            raise ValueError(f"method {entry!r}: unknown audio prompt {audio!r}; known: "
                             f"{', '.join(AUDIO_PROMPT_LABELS)}")
        if dept and base not in DEPT_DEFAULTS:
            raise ValueError(f"method {entry!r}: DePT applies to {', '.join(DEPT_DEFAULTS)}, not {base!r}")
        return cls(base, dept, audio if plus else "none", recipe)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "MethodId":
        """The identity a resolved TrainConfig (as a dict) runs."""
        return cls(config["method"], bool(config.get("dept")), config.get("audio_prompt") or "none",
                   config.get("recipe") or DEFAULT_RECIPE)

    @property
    def token(self) -> str:
        """The canonical entry: `dept:coop+aspl@reference`; `coop` for plain CoOp under PALM's recipe."""
        return (("dept:" if self.dept else "") + self.base
                + ("" if self.audio_prompt == "none" else "+" + self.audio_prompt)
                + ("" if self.recipe == DEFAULT_RECIPE else "@" + self.recipe))

    @property
    def slug(self) -> str:
        """The token in a run's folder name: `dept-coop-asplplus-reference`; `coop` stays `coop`."""
        return self.token.replace("aspl+", "asplplus").replace(":", "-").replace("+", "-").replace("@", "-")

    @property
    def plain(self) -> bool:
        """The method as its paper describes it: no DePT, no audio prompt, the default recipe."""
        return not self.dept and self.audio_prompt == "none" and self.recipe == DEFAULT_RECIPE

    @property
    def label(self) -> str:
        """"CoOp", "DePT (CoOp) + ASPL", "KgCoOp (reference recipe)"."""
        name = METHOD_LABELS.get(self.base, self.base)
        if self.dept:
            name = f"DePT ({name})"
        if self.audio_prompt != "none":
            name += " + " + AUDIO_PROMPT_LABELS[self.audio_prompt]
        if self.recipe != DEFAULT_RECIPE:
            name += f" ({self.recipe} recipe)"
        return name

    def overrides(self) -> dict[str, Any]:
        """The TrainConfig values this identity sets (below the bench's options)."""
        values: dict[str, Any] = {"method": self.base, "recipe": self.recipe}
        if self.dept:
            values["dept"] = True
        if self.audio_prompt != "none":
            values["audio_prompt"] = self.audio_prompt
        return values


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
    methods: list[str] = ["coop"]              # [dept:]METHOD[+aspl|+aspl+][@RECIPE] (MethodId)
    recipe: Literal["palm", "reference"] = "palm"   # of the entries without @RECIPE (TrainConfig.recipe)
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
    fewshot_dir: str | None = None             # `sept data fewshot --out` folder: each run trains on its file

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
        if not value:
            raise ValueError("give at least one method")
        for entry in value:
            MethodId.parse(entry)       # ValueError naming the entry
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
        seen: dict[MethodId, str] = {}
        for entry in self.methods:
            identity = MethodId.parse(entry, self.recipe)
            if identity in seen:
                raise ValueError(f"methods {seen[identity]!r} and {entry!r} both run {identity.label}")
            seen[identity] = entry
        parse_options(self.options, self.methods)   # refuses a malformed option early
        return self

    def method_ids(self) -> list[tuple[str, MethodId]]:
        """(entry as given, its identity under the bench's recipe), in the spec's order."""
        return [(entry, MethodId.parse(entry, self.recipe)) for entry in self.methods]


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
    """["epochs=2", "palm.lr=0.1"] -> ({"epochs": 2}, {"palm": {"lr": 0.1}}).

    A scope is one of the bench's `methods` entries as written (`dept:coop.lr=...`) or a base
    method (`coop.lr=...`: every entry on CoOp); `scoped_options` layers them."""
    shared: dict[str, Any] = {}
    scoped: dict[str, dict[str, Any]] = {}
    bases = {MethodId.parse(m).base for m in methods}
    try:
        for key, value in parse_overrides(list(options)).items():
            head, dot, rest = key.partition(".")
            if dot:
                if head not in methods and head not in bases:
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


def scoped_options(scoped: dict[str, dict[str, Any]], entry: str) -> dict[str, Any]:
    """The options of one methods entry: its base method's, then the entry's own (which win)."""
    base = MethodId.parse(entry).base
    return {**(scoped.get(base, {}) if base != entry else {}), **scoped.get(entry, {})}


def row_label(method: str, arm: str) -> str:
    """The table row of a method token and arm: "CoOp + SEPT", "DePT (CoOp) + ASPL + SEPT"."""
    try:
        name = MethodId.parse(method).label
    except ValueError:
        name = METHOD_LABELS.get(method, method)
    return name + ARM_SUFFIX[arm]
