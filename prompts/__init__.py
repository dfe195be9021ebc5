"""Prompt templates and manual template sets, stored as YAML data files next to this loader.

Every file has a stable `id`; its hash is the sha256 of its canonical JSON content, so a
reformatted file keeps its hash and any change of wording gets a new one. Provenance
records `<id>@<hash>`.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import yaml

_ROOT = Path(__file__).parent


def _content_hash(data: dict) -> str:
    canonical = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]


def _load(folder: str, id_or_path: str) -> tuple[dict, Path]:
    path = Path(id_or_path)
    if not (path.suffix in {".yaml", ".yml"} and path.is_file()):
        path = _ROOT / folder / f"{id_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in (_ROOT / folder).glob("*.yaml")))
        raise KeyError(f"unknown {folder} id {id_or_path!r} (known: {known}; or pass a .yaml file path)")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or "id" not in data:
        raise ValueError(f"{path}: expected a mapping with an 'id' field")
    return data, path


@dataclass(frozen=True)
class Prompt:
    """An LLM prompt for neighbor generation; `user` has {dataset}, {dataset_phrase}, {class_name},
    {class_list}, {n} and {n_ask} placeholders.

    {dataset} is the dataset's name, or, when the run sees only part of its classes, a neutral
    description of the task (see sept.pipeline.generate.prompt_dataset): a name lets an LLM
    recall the classes the run must not see. {dataset_phrase} is the sentence subject the
    bundled prompts open with: 'The audio dataset "<name>"', or the description capitalized
    ("An audio classification task"), which presents the list as the task's classes, not the
    dataset's."""

    id: str
    hash: str
    kind: str
    system: str
    user: str
    description: str = ""

    @property
    def ref(self) -> str:
        return f"{self.id}@{self.hash}"

    def render(self, *, dataset: str, class_name: str, classes: list[str], n: int, n_ask: int,
               named: bool = True) -> str:
        """The user message. named: `dataset` is the dataset's name (else a description)."""
        class_list = ", ".join(f'"{c}"' for c in classes)
        phrase = f'The audio dataset "{dataset}"' if named else dataset[:1].upper() + dataset[1:]
        return self.user.format(dataset=dataset, dataset_phrase=phrase, class_name=class_name,
                                class_list=class_list, n=n, n_ask=n_ask)


@dataclass(frozen=True)
class TemplateSet:
    """Manual templates ("a sound of a {}.") used for margins and the CLAP filter."""

    id: str
    hash: str
    templates: tuple[str, ...]

    @property
    def ref(self) -> str:
        return f"{self.id}@{self.hash}"

    def fill(self, text: str) -> list[str]:
        return [t.format(text) for t in self.templates]


def load_prompt(id_or_path: str = "default") -> Prompt:
    data, path = _load("generation", id_or_path)
    for key in ("system", "user"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise ValueError(f"{path}: field {key!r} must be a non-empty string")
    return Prompt(
        id=str(data["id"]),
        hash=_content_hash(data),
        kind=str(data.get("kind", "mixed")),
        system=data["system"].strip(),
        user=data["user"],
        description=str(data.get("description", "")).strip(),
    )


def load_templates(id_or_path: str = "default") -> TemplateSet:
    data, path = _load("templates", id_or_path)
    templates = data.get("templates")
    if not isinstance(templates, list) or not templates:
        raise ValueError(f"{path}: field 'templates' must be a non-empty list")
    for i, t in enumerate(templates):
        if not isinstance(t, str) or t.count("{}") != 1:
            raise ValueError(f"{path}: template {i + 1} must contain exactly one '{{}}': {t!r}")
    return TemplateSet(id=str(data["id"]), hash=_content_hash(data), templates=tuple(templates))


def list_prompts() -> list[str]:
    return sorted(p.stem for p in (_ROOT / "generation").glob("*.yaml"))


def list_templates() -> list[str]:
    return sorted(p.stem for p in (_ROOT / "templates").glob("*.yaml"))
