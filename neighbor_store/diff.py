"""What changed between two versions, per class: neighbors added, removed, and changed (status or text)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sept.neighbor_store.records import NeighborRecord
from sept.neighbor_store.version import Version


@dataclass
class ClassDiff:
    added: list[NeighborRecord] = field(default_factory=list)
    removed: list[NeighborRecord] = field(default_factory=list)
    status: list[tuple[NeighborRecord, NeighborRecord]] = field(default_factory=list)  # (before, after)
    text: list[tuple[NeighborRecord, NeighborRecord]] = field(default_factory=list)  # (before, after)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.status or self.text)


@dataclass
class VersionDiff:
    a: Version
    b: Version
    classes_added: list[str]
    classes_removed: list[str]
    per_class: dict[str, ClassDiff]  # only classes with changes, in b's class order then a's

    def summary(self) -> dict[str, int]:
        return {
            "added": sum(len(c.added) for c in self.per_class.values()),
            "removed": sum(len(c.removed) for c in self.per_class.values()),
            "status_changed": sum(len(c.status) for c in self.per_class.values()),
            "text_changed": sum(len(c.text) for c in self.per_class.values()),
        }

    def to_json_dict(self) -> dict[str, Any]:
        def rec(r: NeighborRecord) -> dict[str, Any]:
            return {"id": r.id, "text": r.text, "status": r.status}

        return {
            "a": self.a.ref,
            "b": self.b.ref,
            "classes_added": self.classes_added,
            "classes_removed": self.classes_removed,
            "classes": [
                {
                    "class": c,
                    "added": [rec(r) for r in d.added],
                    "removed": [rec(r) for r in d.removed],
                    "status_changed": [{"id": y.id, "text": y.text, "from": x.status, "to": y.status} for x, y in d.status],
                    "text_changed": [{"from_id": x.id, "to_id": y.id, "from": x.text, "to": y.text} for x, y in d.text],
                }
                for c, d in self.per_class.items()
            ],
            "summary": self.summary(),
        }


def _state(v: Version) -> dict[str, NeighborRecord]:
    """id -> record; an id both accepted and rejected (an exact duplicate that was dropped) counts as accepted."""
    out: dict[str, NeighborRecord] = {}
    for r in v.rejected:
        out.setdefault(r.id, r)
    for r in v.neighbors:
        out[r.id] = r
    return out


def diff_versions(a: Version, b: Version) -> VersionDiff:
    sa, sb = _state(a), _state(b)
    edits = {
        r.source.get("edited_from"): r
        for r in sb.values()
        if r.source.get("edited_from") in sa and r.source.get("edited_from") not in sb
    }
    order = list(dict.fromkeys([*b.classes, *a.classes]))
    per_class: dict[str, ClassDiff] = {c: ClassDiff() for c in order}
    for i, r in sa.items():
        if i in sb:
            if sb[i].text != r.text:  # same id, other spelling (case or spacing)
                per_class[r.class_].text.append((r, sb[i]))
            if sb[i].status != r.status:
                per_class[r.class_].status.append((r, sb[i]))
        elif i in edits:
            per_class[r.class_].text.append((r, edits[i]))
            if edits[i].status != r.status:
                per_class[r.class_].status.append((r, edits[i]))
        else:
            per_class[r.class_].removed.append(r)
    edited_to = {r.id for r in edits.values()}
    for i, r in sb.items():
        if i not in sa and i not in edited_to:
            per_class[r.class_].added.append(r)
    return VersionDiff(
        a=a,
        b=b,
        classes_added=[c for c in b.classes if c not in a.classes],
        classes_removed=[c for c in a.classes if c not in b.classes],
        per_class={c: d for c, d in per_class.items() if d},
    )


def format_diff(d: VersionDiff) -> str:
    """A diff a person reads: one block per changed class, `+` added, `-` removed, `~` changed."""
    lines = [f"{d.a.ref} -> {d.b.ref}"]
    for c in d.classes_added:
        lines.append(f"+ class {c!r}")
    for c in d.classes_removed:
        lines.append(f"- class {c!r}")
    for c, cd in d.per_class.items():
        lines.append(f"class {c!r}:")
        for r in cd.added:
            lines.append(f"  + {r.text!r} ({r.status})")
        for r in cd.removed:
            lines.append(f"  - {r.text!r} ({r.status})")
        for x, y in cd.text:
            lines.append(f"  ~ text {x.text!r} -> {y.text!r}")
        for x, y in cd.status:
            lines.append(f"  ~ {y.text!r}: {x.status} -> {y.status}")
    s = d.summary()
    if not d.per_class and not d.classes_added and not d.classes_removed:
        lines.append("no changes")
    lines.append(
        f"{s['added']} added, {s['removed']} removed, {s['status_changed']} status changed, {s['text_changed']} text changed"
    )
    return "\n".join(lines)
