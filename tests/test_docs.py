"""The README and the pages under docs/: every relative link resolves, the README stays a front door.

A relative link is `[text](target)` or `![alt](target)` outside code; its file part must exist
(relative to the page that holds it) and its `#fragment`, when given, must be the GitHub anchor of
a heading in the target page. The README stays short (under 200 lines), keeps the two commands a
newcomer runs (`make demo`, `make test`), links every docs/ page, and its Layout section names
every folder that pyproject.toml installs, with its package.
"""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 200

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"`[^`]*`")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, inline code removed: code is not a link."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), start=1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, INLINE_CODE.sub("", line)))
    return lines


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: lowercased, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)   # a link keeps its text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found, seen, fenced = set(), {}, False
    for line in page.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        match = None if fenced else HEADING.match(line)
        if match:
            slug = github_anchor(match.group(2))
            # GitHub numbers repeated headings: slug, slug-1, slug-2, ...
            count = seen.get(slug, 0)
            found.add(slug if count == 0 else f"{slug}-{count}")
            seen[slug] = count + 1
    return found


def relative_links(page: Path) -> list[tuple[int, str]]:
    links = []
    for number, line in prose_lines(page.read_text(encoding="utf-8")):
        for target in LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):   # http:, https:, mailto:
                continue
            links.append((number, target))
    return links


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for number, target in relative_links(page):
        file_part, _, fragment = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        if not dest.exists():
            broken.append(f"{page.name}:{number}: {target} (no file {dest})")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(f"{page.name}:{number}: {target} (no heading #{fragment} in {dest.name})")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_link_checker_sees_links_and_anchors() -> None:
    """The checks above must actually find links: a parser that saw none would pass vacuously."""
    assert len(relative_links(README)) >= len(PAGES) - 1
    assert github_anchor("Generating neighbors: `sept generate`") == "generating-neighbors-sept-generate"
    assert github_anchor("Base-to-new without leaks: splits, visible classes, protocols") == \
        "base-to-new-without-leaks-splits-visible-classes-protocols"


def test_readme_is_a_front_door() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) < README_MAX_LINES, "README.md has grown: move the depth to docs/"
    for command in ("make demo", "make test"):
        assert command in text, f"README.md must show `{command}`"


def test_readme_links_every_docs_page() -> None:
    linked = {(README.parent / t.partition("#")[0]).resolve() for _, t in relative_links(README)}
    unlinked = [p.name for p in PAGES[1:] if p.resolve() not in linked]
    assert not unlinked, f"docs pages the README does not link: {unlinked}"


def test_layout_names_every_installed_folder() -> None:
    text = README.read_text(encoding="utf-8")
    match = re.search(r"^## Layout\n(.*?)(?=^## )", text, re.M | re.S)
    assert match, "README.md has no '## Layout' section"
    layout = match.group(1)
    listed = re.findall(r"^- `([^`]+)/`(?: \(`([^`]+)`\))?", layout, re.M)
    assert listed, "the Layout section lists no folder"
    for folder, _ in listed:
        assert (ROOT / folder).is_dir(), f"Layout names {folder}/, which does not exist"
    package_dir = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    documented = {folder: package for folder, package in listed}
    for package, folder in package_dir.items():
        assert folder in documented, f"Layout does not name {folder}/ ({package})"
        assert documented[folder] == package, f"Layout gives {folder}/ as {documented[folder]}, not {package}"
