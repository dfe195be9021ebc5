"""Base / new class splits for base-to-new evaluation, shared by the pipeline and the trainer.

Policies (`resolve_split(classes, policy, seed, dataset=...)`):

- ``sorted``: CoOp/Dassl's split. Classes sorted; the first ceil(C/2) are base, the rest new.
- ``shuffled``: sept's own seeded per-dataset shuffle, not any paper's published split: the
  sorted classes shuffled with ``random.Random(seed).shuffle`` (seed 42 by default); the first
  floor(C/2) are base. Python's Mersenne Twister seeded from an int and its ``shuffle``
  (Fisher-Yates over ``_randbelow``) give the same order on every platform and every Python 3
  release since 3.2; tests pin the 11 benchmark datasets' splits as golden data so a change
  would show.
- ``zebra``: ZEBRA's published base/novel lists (asif-hanif/zebra,
  ``scripts/base-novel-classes/``) for the 11 PALM benchmark datasets, shipped as data in
  ``zebra_splits.json``. ZEBRA seeds Python's global ``random`` once with 42 and then calls
  ``random.sample(sorted_classes, C)`` for each dataset in a fixed order, so one dataset's split
  depends on the datasets before it: no per-dataset seed reproduces it, hence the shipped lists
  (a test regenerates them by that procedure and compares with ZEBRA's files). Any other
  dataset, or a dataset whose classes differ from ZEBRA's, is refused with the reason.
- ``file:PATH``: a JSON file ``{"base": [...], "new": [...]}`` naming every class exactly once;
  ZEBRA's files are read as they are (``novel`` for ``new``, and an ``all`` list, when present,
  must be the dataset's classes).

Whatever the policy, `Split.base` and `Split.new` list their classes in the dataset's sorted
order, so the label space of each part is independent of the shuffle.
"""
from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from sept.errors import SeptError

POLICIES = ("sorted", "shuffled", "zebra", "file:PATH")
ZEBRA_FILE = Path(__file__).with_name("zebra_splits.json")
DEFAULT_SEED = 42


class SplitError(SeptError, ValueError):
    """A split cannot be resolved; the message names the policy, file or class."""


class _SplitFile(BaseModel):
    """sept's `{"base", "new"}` or ZEBRA's `{"base", "novel", "all"}`."""
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    base: list[str]
    new: list[str] = Field(validation_alias=AliasChoices("new", "novel"))
    all: list[str] | None = None


@dataclass(frozen=True)
class Split:
    policy: str
    seed: int | None                 # the shuffle seed; None for sorted and file policies
    base: list[str]
    new: list[str]

    @property
    def classes(self) -> list[str]:
        return sorted(self.base + self.new)

    def part(self, name: str) -> list[str]:
        """"base", "new" or "all" -> that part's classes."""
        parts = {"base": self.base, "new": self.new, "all": self.classes}
        if name not in parts:
            raise SplitError(f"split part {name!r}: expected base, new or all")
        return list(parts[name])

    def to_dict(self) -> dict:
        return {"policy": self.policy, "seed": self.seed, "base": list(self.base), "new": list(self.new)}


def check_policy(policy: str) -> str:
    """Raise SplitError unless `policy` is sorted, shuffled, zebra or file:PATH (the file is read later)."""
    if policy in ("sorted", "shuffled", "zebra"):
        return policy
    if policy.startswith("file:") and policy[len("file:"):].strip():
        return policy
    raise SplitError(f"split policy {policy!r}: expected sorted, shuffled, zebra or file:PATH")


# A config field holding a split policy; pydantic reports a SplitError under the field's name.
SplitPolicy = Annotated[str, AfterValidator(check_policy)]


def resolve_split(classes: list[str], policy: str = "sorted", seed: int = DEFAULT_SEED,
                  n_base: int | None = None, dataset: str | None = None) -> Split:
    """The base/new split of `classes` under `policy`.

    n_base: number of base classes for the sorted and shuffled policies (default ceil(C/2)
    for sorted, floor(C/2) for shuffled); a file or ZEBRA's lists name their own.
    dataset: the dataset's name; needed by ``zebra`` (its lists are per dataset).
    """
    check_policy(policy)
    repeated = sorted({c for c in classes if classes.count(c) > 1})
    if repeated:
        raise SplitError(f"class list repeats {', '.join(map(repr, repeated))}")
    ordered = sorted(classes)
    if policy.startswith("file:"):
        if n_base is not None:
            raise SplitError(f"n_base={n_base} cannot be combined with split policy {policy!r}")
        base, new = _read_split_file(Path(policy[len("file:"):].strip()).expanduser(), ordered)
        return Split(policy, None, base, new)
    if policy == "zebra":
        if n_base is not None:
            raise SplitError(f"n_base={n_base} cannot be combined with split policy 'zebra' (ZEBRA's lists fix it)")
        base, new = _zebra_split(dataset, ordered)
        return Split(policy, None, base, new)
    if policy == "sorted":
        order, n = ordered, math.ceil(len(ordered) / 2)
    else:
        order = list(ordered)
        random.Random(seed).shuffle(order)
        n = len(order) // 2
    if n_base is not None:
        n = n_base
    if not 1 <= n < len(order):
        raise SplitError(f"split policy {policy!r}: {n} base classes of {len(order)} leaves no base or no new class")
    base_set = set(order[:n])
    return Split(policy, seed if policy == "shuffled" else None,
                 [c for c in ordered if c in base_set], [c for c in ordered if c not in base_set])


def _read_split_file(path: Path, classes: list[str]) -> tuple[list[str], list[str]]:
    if not path.is_file():
        raise SplitError(f"split file {path} does not exist")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SplitError(f"split file {path}: not JSON ({e})") from e
    try:
        parsed = _SplitFile.model_validate(raw)
    except ValidationError as e:
        detail = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'top level'}: {err['msg']}" for err in e.errors())
        raise SplitError(f'split file {path}: expected {{"base": [...], "new": [...]}} or ZEBRA\'s {{"base", "novel", "all"}} ({detail})') from e
    problems: list[str] = []
    for part in ("base", "new"):
        names = getattr(parsed, part)
        twice = sorted({c for c in names if names.count(c) > 1})
        if twice:
            problems.append(f"{', '.join(map(repr, twice))} listed twice in {part!r}")
    if parsed.all is not None and sorted(parsed.all) != classes:
        extra, absent = sorted(set(parsed.all) - set(classes)), sorted(set(classes) - set(parsed.all))
        problems.append("'all' is not the dataset's class list"
                        + (f" (not a class: {', '.join(map(repr, extra))})" if extra else "")
                        + (f" (missing: {', '.join(map(repr, absent))})" if absent else "")
                        + (" (a class listed twice)" if not extra and not absent else ""))
    both = sorted(set(parsed.base) & set(parsed.new))
    if both:
        problems.append(f"{', '.join(map(repr, both))} in both 'base' and 'new'")
    known = set(classes)
    unknown = sorted((set(parsed.base) | set(parsed.new)) - known)
    if unknown:
        problems.append(f"{', '.join(map(repr, unknown))} not a class of the dataset")
    missing = [c for c in classes if c not in set(parsed.base) | set(parsed.new)]
    if missing:
        problems.append(f"{', '.join(map(repr, missing))} in neither 'base' nor 'new'")
    if not problems and (not parsed.base or not parsed.new):
        problems.append("'base' and 'new' must each name at least one class")
    if problems:
        raise SplitError(f"split file {path}: " + "; ".join(problems))
    base_set = set(parsed.base)
    return [c for c in classes if c in base_set], [c for c in classes if c not in base_set]


def zebra_datasets() -> dict[str, dict[str, list[str]]]:
    """ZEBRA's published lists: dataset name -> {"base": [...], "novel": [...]}, in ZEBRA's order."""
    return json.loads(ZEBRA_FILE.read_text(encoding="utf-8"))["splits"]


def _zebra_split(dataset: str | None, classes: list[str]) -> tuple[list[str], list[str]]:
    published = zebra_datasets()
    if dataset is None:
        raise SplitError("split policy 'zebra' needs the dataset's name (ZEBRA publishes one split per dataset)")
    from sept.names import dataset_slug

    by_slug = {dataset_slug(name): name for name in published}
    name = by_slug.get(dataset_slug(dataset))
    if name is None:
        raise SplitError(f"split policy 'zebra': ZEBRA published no split for dataset {dataset!r} "
                         f"(only {', '.join(published)}); use sorted, shuffled or file:PATH")
    lists = published[name]
    theirs = sorted(lists["base"] + lists["novel"])
    if theirs != classes:
        extra, absent = sorted(set(classes) - set(theirs)), sorted(set(theirs) - set(classes))
        raise SplitError(f"split policy 'zebra': the classes of {dataset!r} are not ZEBRA's {name} classes"
                         + (f"; not in ZEBRA's list: {', '.join(map(repr, extra))}" if extra else "")
                         + (f"; missing here: {', '.join(map(repr, absent))}" if absent else ""))
    base = set(lists["base"])
    return [c for c in classes if c in base], [c for c in classes if c not in base]


def visible_classes_of(manifest: dict) -> list[str]:
    """The classes a neighbor version's prompts, CLAP filter and audio check could see.

    Read from the manifest's "visible_classes", else its generation params' (where the pipeline
    and `sept store import --visible-classes` record it, inside the version's identity), else
    its class list: a version that says nothing saw at least its own classes.
    """
    for where in (manifest, manifest.get("params") or {}):
        if isinstance(where.get("visible_classes"), list):
            return list(where["visible_classes"])
    return list(manifest.get("classes", []))
