"""README.md and the documentation speak to users about the product as it is: no issue
numbers, no account of past rounds of work. Upstream issues may be cited as owner/repo#123."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]

# What history looks like in this project's notes; an upstream reference
# (kubernetes/kubernetes#83916) is preceded by its repository and is allowed.
HISTORY = [
    re.compile(r"\bissues? ?#?\d", re.IGNORECASE),
    re.compile(r"(?<![\w.-]/)(?<![\w.-])(?<!attempt )#\d+\b"),  # not kopf's "attempt #2"
    re.compile(r"\b(last|previous|this|next) round\b", re.IGNORECASE),
    re.compile(r"\bload average", re.IGNORECASE),
    re.compile(r"\blab notebook\b", re.IGNORECASE),
    re.compile(r"\b(before|after) the (merge|fix) of\b", re.IGNORECASE),
]


def test_pages_exist() -> None:
    assert len(PAGES) > 5


def test_no_issue_numbers_or_history() -> None:
    found = []
    for page in PAGES:
        for number, line in enumerate(page.read_text().splitlines(), 1):
            for pattern in HISTORY:
                match = pattern.search(line)
                if match:
                    where = page.relative_to(REPO)
                    found.append(f"{where}:{number}: {match[0]!r} in {line.strip()!r}")
    assert not found, "\n".join(found)


def test_upstream_references_are_allowed() -> None:
    line = "the kubelet keeps the first grace period (kubernetes/kubernetes#83916)"
    assert not any(pattern.search(line) for pattern in HISTORY)
    assert any(pattern.search("fixed in issue 10") for pattern in HISTORY)
    assert any(pattern.search("see #17") for pattern in HISTORY)
