"""Is a new CustomResourceDefinition a compatible successor of an old one?

What an object stored under the old CRD, and a client or an older operator written for it,
rely on. Checked structurally, schema against schema, at every path of every version the
old CRD served:
- nothing removed: no served version, no property, no enum value, no printer column, no
  status or scale subresource, and no change of group, kind, plural or scope;
- no type changed (`type`, `format`, `x-kubernetes-int-or-string`, `nullable` turned off,
  `x-kubernetes-preserve-unknown-fields` turned off: that would prune stored data);
- no new validation that could refuse an object the old CRD stored: a newly required
  property, an enum where there was none, a tighter bound (minimum, maximum, min/max length
  and items, exclusive flags), a new or changed `pattern`, and any CEL rule
  (`x-kubernetes-validations`) that the old schema did not have at that path (a rule is
  compared by its text: the checker cannot prove two rules equivalent, so a reworded rule is
  a finding too; a maintainer who has proved it harmless lists it in ALLOWED with why), and
  any new or changed anyOf/oneOf/allOf/not.

Loosening is always fine (new optional fields, new enum values, wider bounds, rules removed).
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

# Findings reviewed and accepted (the exact line, and why).
ALLOWED: dict[str, str] = {
    'v1alpha1: <root>: new validation rule "!has(oldSelf.status) || !has(oldSelf.status.storage)'
    " || !has(oldSelf.status.storage.status) || oldSelf.status.storage.status == 'Cleared'"
    " || self.spec.storage.size == oldSelf.spec.storage.size"
    " || quantity(string(self.spec.storage.size).trim()).isGreaterThan("
    'quantity(string(oldSelf.spec.storage.size).trim()))"': "0.2.0 lets the size grow in use: "
    "the old rule allowed a size change only while Cleared (or none); this one allows the same "
    "and a growth, so it refuses nothing the old one accepted (a transition rule: stored "
    "objects are not re-checked).",
    # 0.2.0's autoscaling: maxSize at least size (the rule in full, as the CRD has it).
    'v1alpha1: <root>.spec.storage: new validation rule "!has'
    "(self.autoscaling) || !((!string(self.size).matches(r'^ "
    "*[\\\\t\\\\n\\\\v\\\\f\\\\r\\\\x{85}\\\\x{A0}\\\\x{1680}\\\\x{2000}-\\\\x{20"
    "0A}\\\\x{2028}\\\\x{2029}\\\\x{202F}\\\\x{205F}\\\\x{3000}]|[\\\\t\\\\"
    "n\\\\v\\\\f\\\\r\\\\x{85}\\\\x{A0}\\\\x{1680}\\\\x{2000}-\\\\x{200A}\\\\x{"
    "2028}\\\\x{2029}\\\\x{202F}\\\\x{205F}\\\\x{3000}] *$') && !stri"
    "ng(self.size).trim().matches(r'[eE][-+]?[0-9]{4}') && is"
    "Quantity(string(self.size).trim())) && (!string(self.aut"
    "oscaling.maxSize).matches(r'^ *[\\\\t\\\\n\\\\v\\\\f\\\\r\\\\x{85}\\\\"
    "x{A0}\\\\x{1680}\\\\x{2000}-\\\\x{200A}\\\\x{2028}\\\\x{2029}\\\\x{2"
    "02F}\\\\x{205F}\\\\x{3000}]|[\\\\t\\\\n\\\\v\\\\f\\\\r\\\\x{85}\\\\x{A0}\\\\"
    "x{1680}\\\\x{2000}-\\\\x{200A}\\\\x{2028}\\\\x{2029}\\\\x{202F}\\\\x"
    "{205F}\\\\x{3000}] *$') && !string(self.autoscaling.maxSiz"
    "e).trim().matches(r'[eE][-+]?[0-9]{4}') && isQuantity(st"
    "ring(self.autoscaling.maxSize).trim()))) || !quantity(st"
    "ring(self.size).trim()).isGreaterThan(quantity(string(se"
    'lf.autoscaling.maxSize).trim()))"': "0.2.0: spec.storage.autoscaling.maxSize must be at least "
    "spec.storage.size. True whenever autoscaling is unset, and nothing 0.1.0 stored or "
    "accepted has autoscaling: it refuses nothing 0.1.0 accepted.",
}

_LOWER_BOUNDS = ("minimum", "minLength", "minItems", "minProperties")
_UPPER_BOUNDS = ("maximum", "maxLength", "maxItems", "maxProperties")


def incompatibilities(old: Schema, new: Schema) -> list[str]:
    """Every way `new` (a CRD) breaks what `old` served, as "path: what" lines; [] if none."""
    found: list[str] = []
    for key in ("group", "scope"):
        before, after = old["spec"].get(key), new["spec"].get(key)
        if before != after:
            found.append(f"spec.{key}: changed {before!r} -> {after!r}")
    for key in ("kind", "plural"):
        before, after = old["spec"]["names"].get(key), new["spec"]["names"].get(key)
        if before != after:
            found.append(f"spec.names.{key}: changed {before!r} -> {after!r}")
    new_versions = {v["name"]: v for v in new["spec"]["versions"]}
    for version in old["spec"]["versions"]:
        if not version.get("served"):
            continue
        name = version["name"]
        successor = new_versions.get(name)
        if successor is None or not successor.get("served"):
            found.append(f"{name}: version no longer served")
            continue
        found += [f"{name}: {line}" for line in _version(version, successor)]
    return [f for f in found if f not in ALLOWED]


def _version(old: Schema, new: Schema) -> list[str]:
    found: list[str] = []
    for sub in old.get("subresources") or {}:
        if sub not in (new.get("subresources") or {}):
            found.append(f"subresources.{sub}: removed")
    new_columns = {c["name"]: c for c in new.get("additionalPrinterColumns") or []}
    for column in old.get("additionalPrinterColumns") or []:
        now = new_columns.get(column["name"])
        if now is None:
            found.append(f"printer column {column['name']!r}: removed")
        elif (now["jsonPath"], now["type"]) != (column["jsonPath"], column["type"]):
            found.append(f"printer column {column['name']!r}: jsonPath or type changed")
    found += _schema(old["schema"]["openAPIV3Schema"], new["schema"]["openAPIV3Schema"], "<root>")
    return found


def _schema(old: Schema, new: Schema, path: str) -> list[str]:
    found: list[str] = []
    for key in ("type", "format", "x-kubernetes-int-or-string"):
        if old.get(key) != new.get(key):
            found.append(f"{path}: {key} changed {old.get(key)!r} -> {new.get(key)!r}")
    for flag in ("nullable", "x-kubernetes-preserve-unknown-fields"):
        if old.get(flag) and not new.get(flag):
            found.append(f"{path}: {flag} turned off")
    if "enum" in new:
        if "enum" not in old:
            found.append(f"{path}: enum added {new['enum']!r}")
        else:
            for value in old["enum"]:
                if value not in new["enum"]:
                    found.append(f"{path}: enum value {value!r} removed")
    for key in _LOWER_BOUNDS:
        if key in new and (key not in old or new[key] > old[key]):
            found.append(f"{path}: {key} raised {old.get(key)!r} -> {new[key]!r}")
    for key in _UPPER_BOUNDS:
        if key in new and (key not in old or new[key] < old[key]):
            found.append(f"{path}: {key} lowered {old.get(key)!r} -> {new[key]!r}")
    for key in ("exclusiveMinimum", "exclusiveMaximum"):
        if new.get(key) and not old.get(key):
            found.append(f"{path}: {key} turned on")
    if "pattern" in new and new.get("pattern") != old.get("pattern"):
        found.append(f"{path}: pattern {old.get('pattern')!r} -> {new['pattern']!r}")
    for key in ("anyOf", "oneOf", "allOf", "not"):
        if key in new and new[key] != old.get(key):
            found.append(f"{path}: {key} added or changed")
    for required in sorted(set(new.get("required") or []) - set(old.get("required") or [])):
        found.append(f"{path}: property {required!r} newly required")
    old_rules = {r["rule"] for r in old.get("x-kubernetes-validations") or []}
    for rule in new.get("x-kubernetes-validations") or []:
        if rule["rule"] not in old_rules:
            found.append(f"{path}: new validation rule {rule['rule']!r}")
    new_properties = new.get("properties") or {}
    for name, prop in (old.get("properties") or {}).items():
        if name not in new_properties:
            found.append(f"{path}.{name}: removed")
        else:
            found += _schema(prop, new_properties[name], f"{path}.{name}")
    for key, suffix in (("items", "[]"), ("additionalProperties", "{}")):
        before, after = old.get(key), new.get(key)
        if isinstance(before, dict):
            if isinstance(after, dict):
                found += _schema(before, after, f"{path}{suffix}")
            elif after is not True:
                found.append(f"{path}{suffix}: {key} removed")
    return found


def added_properties(old: Schema, new: Schema, version: str = "v1alpha1") -> list[str]:
    """The property paths (".spec.storage.x") the new CRD has and the old one has not: what
    an older operator, running against the new CRD after a rollback, does not know."""

    def schema(crd: Schema) -> Schema:
        (found,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
        root: Schema = found["schema"]["openAPIV3Schema"]
        return root

    def walk(before: Schema, after: Schema, path: str) -> list[str]:
        out: list[str] = []
        known = before.get("properties") or {}
        for name, prop in (after.get("properties") or {}).items():
            if name not in known:
                out.append(f"{path}.{name}")
            else:
                out += walk(known[name], prop, f"{path}.{name}")
        if isinstance(before.get("items"), dict) and isinstance(after.get("items"), dict):
            out += walk(before["items"], after["items"], f"{path}[]")
        return out

    return walk(schema(old), schema(new), "")
