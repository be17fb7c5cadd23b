"""Hypothesis strategies from a CRD's structural schema (the subset a CRD uses).

hypothesis-jsonschema 0.23.1, the kept library for this, fails on current Hypothesis
(6.170: `AttributeError: 'many' object has no attribute 'more'` in from_object_schema), so
this small walker does the same for structural schemas: objects with properties,
maps (additionalProperties, maxProperties), strings (enum, pattern, lengths), integers and
int-or-string. Strings and quantities also draw arbitrary text now and then, so the API
server's own checks (patterns are RE2, ASCII-only) are probed beyond what Python's regex
engine would produce.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st


def from_crd_schema(
    node: dict[str, Any],
    key_hints: list[str] | None = None,
    value_hints: dict[str, list[Any]] | None = None,
) -> Any:
    """`key_hints`: map keys worth trying beside arbitrary text. `value_hints`: values worth
    trying for a property of that name, beside what its schema draws (a CEL rule, which
    the walker cannot read, may admit almost none of the drawn strings)."""
    if node.get("x-kubernetes-int-or-string"):
        numbers = st.one_of(
            *[st.integers(min_value=1, max_value=10**4)] * 4,
            st.integers(min_value=-2, max_value=2),
            st.integers(),
        )
        return st.one_of(numbers, _string({**node, "type": "string"}))
    if "enum" in node:
        return st.sampled_from(node["enum"])
    kind = node.get("type")
    if kind == "object" and "properties" in node:
        required = set(node.get("required") or [])
        fields = {
            k: _hinted(from_crd_schema(v, key_hints, value_hints), (value_hints or {}).get(k))
            for k, v in node["properties"].items()
        }
        return st.fixed_dictionaries(
            {k: v for k, v in fields.items() if k in required},
            optional={k: v for k, v in fields.items() if k not in required},
        )
    if kind == "object" and isinstance(node.get("additionalProperties"), dict):
        keys = (
            st.one_of(*[st.sampled_from(key_hints)] * 9, st.text(max_size=20))
            if key_hints
            else st.text(max_size=20)
        )
        return st.dictionaries(
            keys,
            from_crd_schema(node["additionalProperties"], key_hints, value_hints),
            max_size=int(node.get("maxProperties", 5)) + 1,
        )
    if kind == "integer":
        return st.integers()
    if kind == "string":
        return _string(node)
    raise NotImplementedError(f"schema node not covered: {node}")


def _hinted(drawn: Any, hints: list[Any] | None) -> Any:
    return st.one_of(*[st.sampled_from(hints)] * 3, drawn) if hints else drawn


def _string(node: dict[str, Any]) -> Any:
    low, high = int(node.get("minLength", 0)), int(node.get("maxLength", 64))
    anything = st.text(max_size=min(high + 1, 80))
    pattern = node.get("pattern")
    if not pattern:
        plain = st.text(
            st.characters(min_codepoint=33, max_codepoint=126), min_size=low, max_size=min(high, 80)
        )
        return st.one_of(*[plain] * 9, anything)
    matching = st.from_regex(pattern, fullmatch=True).filter(lambda s: low <= len(s) <= high)
    return st.one_of(*[matching] * 9, anything)
