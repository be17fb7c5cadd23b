"""Rule 15's wording: every refusal a user can trigger through the CRD is a sentence that
names the field, never a regular expression. tests/integration/test_bad_input.py triggers
them on a real API server; this lists them all from the generated CRD."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from sluice.api import crd

SCHEMA = yaml.safe_load(crd.render())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
# What gives a regular expression away; a sentence has none of these.
REGEX_SYNTAX = re.compile(r"\^|\$|\\|\[|\]|\(\?|\{\d|\*|\+\)|\|")
FIELD = re.compile(r"\b(spec|metadata)\.[A-Za-z]")


def _rules(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    if isinstance(node, list):
        return [r for item in node for r in _rules(item, path)]
    if not isinstance(node, dict):
        return []
    found = [(path, rule) for rule in node.get("x-kubernetes-validations", [])]
    for key, value in node.items():
        if key != "x-kubernetes-validations":
            found += _rules(value, f"{path}.{key}")
    return found


def _patterns(node: Any, path: str = "") -> list[str]:
    if isinstance(node, list):
        return [p for item in node for p in _patterns(item, path)]
    if not isinstance(node, dict):
        return []
    found = [path] if "pattern" in node else []
    for key, value in node.items():
        found += _patterns(value, f"{path}.{key}")
    return found


RULES = _rules(SCHEMA)


def _literals(expression: str) -> str:
    """The text a messageExpression puts together: its string literals (not the raw ones,
    r'...', which hold the patterns the expression itself uses), joined."""
    tokens = re.finditer(r"r'[^']*'|'((?:[^'\\]|\\.)*)'|\"([^\"]*)\"", expression)
    return " ".join(m[1] or m[2] or "" for m in tokens)


def test_there_are_refusals_to_check() -> None:
    assert len(RULES) >= 15, RULES


def test_no_field_a_user_sets_has_a_schema_pattern() -> None:
    """The API server words a pattern refusal as the pattern itself ("should match '^...'"),
    so user-facing checks of a format are CEL rules with a sentence instead."""
    assert _patterns(SCHEMA["properties"]["spec"]) == []
    assert _patterns(SCHEMA) == []


@pytest.mark.parametrize(
    ("path", "rule"), RULES, ids=[f"{p}:{r['message'][:40]}" for p, r in RULES]
)
def test_each_refusal_is_a_sentence_naming_the_field(path: str, rule: dict[str, Any]) -> None:
    texts = [rule["message"]]
    if "messageExpression" in rule:
        texts.append(_literals(rule["messageExpression"]))
    for text in texts:
        assert FIELD.search(text), f"{path}: {text!r} does not name the field"
        assert not REGEX_SYNTAX.search(text), f"{path}: {text!r} reads like a pattern"
        words = re.findall(r"[A-Za-z]{2,}", text)
        assert len(words) >= 6, f"{path}: {text!r} is not a sentence"
