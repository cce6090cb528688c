"""Every relative link in the documents behind the README (docs/, CONTRIBUTING.md) reaches a
file of the tree, and a link's anchor a heading of its target."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ..readme.readme_names import ROOT, slug

DOCUMENTS = sorted([*ROOT.glob("docs/**/*.md"), ROOT / "CONTRIBUTING.md"])


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_reach_the_tree(document: Path) -> None:
    text = document.read_text()
    prose = re.sub(r"^```.*?^```$", "", text, flags=re.M | re.S)
    broken = []
    for link in re.findall(r"\]\(([^)\s]+)\)", prose):
        if "://" in link or link.startswith("mailto:"):
            continue
        target, _, anchor = link.partition("#")
        path = (document.parent / target).resolve() if target else document
        if not path.exists():
            broken.append(f"{link}: no such file")
        elif anchor and path.is_file():
            headings = {slug(h) for h in re.findall(r"^#+ (.+)$", path.read_text(), re.M)}
            if anchor not in headings:
                broken.append(f"{link}: no such heading")
    assert broken == []
