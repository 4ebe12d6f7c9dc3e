"""README.md and docs/: a short front door, and every link in them leads somewhere real."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
README = REPO_ROOT / "README.md"
DOCS = REPO_ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]

_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^(```|~~~)")


def prose_lines(page: Path) -> Iterator[str]:
    """The lines of ``page`` outside fenced code blocks."""
    fenced = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield line


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, blanks to hyphens."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> List[str]:
    return [anchor(line.lstrip("#")) for line in prose_lines(page) if re.match(r"#{1,6} ", line)]


def relative_links(page: Path) -> List[Tuple[str, str]]:
    """(target file or "", anchor or "") of every link in ``page`` that is not a URL."""
    links = []
    for line in prose_lines(page):
        for target in _LINK.findall(line):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, fragment = target.partition("#")
            links.append((path, fragment))
    return links


def test_readme_is_a_front_door_of_at_most_300_lines():
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 300


def test_readme_links_every_docs_page():
    linked = {path for path, _ in relative_links(README)}
    assert {f"docs/{page.name}" for page in DOCS.glob("*.md")} <= linked


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_relative_link_names_an_existing_file_and_heading(page):
    for path, fragment in relative_links(page):
        target = (page.parent / path).resolve() if path else page
        assert target.exists(), f"{page.name}: link to missing {path}"
        if fragment and target.suffix == ".md":
            assert fragment in anchors(target), f"{page.name}: no heading #{fragment} in {path}"
