"""Whether a neighbor version can serve a training run: the one check behind `sept train` and `sept bench`.

    served = serving(version, dataset_classes, training_classes)   # the facts, never raises
    served.refusal(split)            # None, or the one-line reason the run is refused
    served.record()                  # what the run records: {"visible_classes": [...], ...}

A version serves a run when
  * it holds neighbors for every training class (a base-only version serves base-to-new),
  * it holds no class foreign to the dataset, and
  * every class it saw while it was made (its `visible_classes`: what its LLM prompts, CLAP
    filter and audio check saw) is a training class. In base-to-new a version that saw a new
    class leaks the new classes into training; it serves only when the caller allows that (the
    trainer's `allow_visible_new`, the leak ablation), and the run then records what was seen.

`training_classes` are the base classes in base-to-new (pass the split) and all of the dataset's
classes in the cross protocol (no split). The check reads the version only; it calls no LLM and
no encoder.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sept.splits import Split, visible_classes_of

# reasons name at most this many classes (the rest are counted), so a refusal stays one line
SHOWN = 12


def class_names(classes: list[str], shown: int = SHOWN) -> str:
    """'a', 'b' and 3 more."""
    text = ", ".join(map(repr, classes[:shown]))
    return text + (f" and {len(classes) - shown} more" if len(classes) > shown else "")


@dataclass(frozen=True)
class Serving:
    """What a version offers a run, against the dataset's and the training's classes."""

    ref: str                      # the version as commands print it (<dataset-slug>@<12 hex>)
    visible: list[str]            # the classes the version saw while it was made
    lacking: list[str]            # training classes the version holds no neighbors for
    foreign: list[str]            # the version's classes that the dataset does not have
    seen: list[str]               # visible classes that are not training classes
    made_for: dict[str, Any] | None   # the split the version was generated for (its params), if any

    @property
    def covers(self) -> bool:
        """Holds neighbors for every training class and for no class foreign to the dataset."""
        return not self.lacking and not self.foreign

    def refusal(self, split: Split | None = None, allow_seen: bool = False) -> str | None:
        """None when the version serves the run; else why not, naming the classes at fault.
        `split`: the run's base-to-new split (None in the cross protocol)."""
        leak = self._seen_text(split) if self.seen and not allow_seen else None
        seen_new = [c for c in split.new if c in set(self.seen)] if split is not None and not allow_seen else []
        if not self.covers:
            detail = []
            if self.lacking:
                whose = "base classes" if split is not None else "the dataset"
                detail.append(f"in {whose} but not the version: {class_names(self.lacking)}")
            if self.foreign:
                detail.append(f"in the version but not the dataset: {class_names(self.foreign)}")
            if split is not None and self.made_for:
                detail.append(f"the version was made for split {self.made_for.get('policy')!r} part "
                              f"{self.made_for.get('part')!r}, the run uses split {split.policy!r}")
            if seen_new:     # a leak of new classes is the graver fault: say it too
                detail.append(f"and it saw the new class(es) {class_names(seen_new)} while it was made")
            return f"neighbor version {self.ref} does not match the training classes; " + "; ".join(detail)
        if leak:
            return (f"neighbor version {self.ref} saw {leak} while it was made (its visible_classes); "
                    "training must not see them")
        return None

    def _seen_text(self, split: Split | None) -> str:
        if split is None:
            return f"class(es) outside the training classes {class_names(self.seen)}"
        seen = set(self.seen)
        parts = []
        new = [c for c in split.new if c in seen]
        if new:
            parts.append(f"the new class(es) {class_names(new)}")
        others = [c for c in self.seen if c not in set(split.new)]
        if others:
            parts.append(f"class(es) foreign to the dataset {class_names(others)}")
        return " and ".join(parts)

    def remedy(self, dataset: str, split: Split | None = None) -> str:
        """How to make a version that serves the run (the dataset root is the caller's to fill in)."""
        if split is not None:
            seed = f" --split-seed {split.seed}" if split.policy == "shuffled" else ""
            return (f"make a base-only version: sept generate --dataset {dataset} --dataset-root <root> "
                    f"--split base --split-policy {split.policy}{seed} --backend ... --model ...")
        return f"make a version that sees only {dataset}'s classes: sept generate --dataset {dataset} ..."

    def record(self) -> dict[str, Any]:
        """What a run that uses the version records about it: its visible classes and, when it saw
        classes outside the training (allowed), those classes."""
        info: dict[str, Any] = {"visible_classes": list(self.visible)}
        if self.seen:
            info["visible_new"] = list(self.seen)
            info["allow_visible_new"] = True
        return info


def serving(version, dataset_classes: list[str], training_classes: list[str]) -> Serving:
    """Compare a store `Version` with a run's classes (see the module docstring); never raises."""
    own = set(version.classes)
    dataset, training = set(dataset_classes), set(training_classes)
    visible = visible_classes_of(version.manifest)
    made_for = (version.manifest.get("params") or {}).get("split")
    return Serving(
        ref=version.ref,
        visible=visible,
        lacking=[c for c in training_classes if c not in own],
        foreign=[c for c in version.classes if c not in dataset],
        seen=[c for c in visible if c not in training],
        made_for=made_for if isinstance(made_for, dict) else None,
    )
