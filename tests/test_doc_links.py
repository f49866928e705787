"""The links of the README and the docs: every relative link names a file of the repository, and every
``#fragment`` a heading of its page (GitHub's anchors: lower case, punctuation dropped, spaces to dashes).

A heading renamed (the CIFAR-10 section lost its "(in progress)") must not leave a link pointing nowhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted(ROOT.glob("docs/**/*.md")), *sorted(ROOT.glob("benchmarks/*.md")),
         *sorted(ROOT.glob("scripts/**/*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"```.*?```", re.S)


def anchors(text: str) -> set[str]:
    """GitHub's anchors of the Markdown headings in ``text``."""
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+ (.+)$", FENCE.sub("", text), re.M)}


def test_the_anchor_rule_on_headings_of_this_readme() -> None:
    assert anchors("## CIFAR-10 on real images (seven rows of ten)\n### ANP-VS on a CPU: protocol and frontier\n") \
        == {"cifar-10-on-real-images-seven-rows-of-ten", "anp-vs-on-a-cpu-protocol-and-frontier"}
    assert anchors("```\n# a comment in code\n```\n") == set()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in LINK.findall(FENCE.sub("", page.read_text())):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, fragment = target.partition("#")
        dest = (page.parent / path) if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest.read_text()):
            broken.append(f"{target}: no heading with that anchor")
    assert not broken, broken
