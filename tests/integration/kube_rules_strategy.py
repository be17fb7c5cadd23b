"""Hypothesis strategies for container `resources` and a claim's `storage` request, built
from Kubernetes' own rules rather than from the CRD's schema (which can only offer what it
already admits). Every kind of name the API server treats differently (validateContainer-
ResourceName, IsExtendedResourceName, IsNativeResource, IsHugePageResourceName in
k8s.io/kubernetes pkg/apis/core) and quantities in every notation ParseQuantity reads
(k8s.io/apimachinery pkg/api/resource), valid and not, as JSON integers and strings.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

DIGITS = st.text("0123456789", min_size=1, max_size=4)
SIGNS = st.sampled_from(["", "", "", "+", "-"])
SUFFIXES = st.sampled_from(
    ["", "", "", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"]
)
# Kubernetes parses these fine; Sluice refuses a four-digit exponent on purpose (a longer
# one can take the API server minutes), so they exercise that documented refusal.
EXPONENTS = st.builds(
    lambda e, sign, digits: f"{e}{sign}{digits}",
    st.sampled_from("eE"),
    st.sampled_from(["", "", "+", "-"]),
    st.one_of(st.text("0123456789", min_size=1, max_size=3), st.sampled_from(["1000", "0001"])),
)


def _number() -> st.SearchStrategy[str]:
    """<digits> | <digits>.<digits> | <digits>. | .<digits>, and a bare sign or dot."""
    return st.one_of(
        DIGITS,
        DIGITS,
        st.builds(lambda a, b: f"{a}.{b}", DIGITS, DIGITS),
        st.builds(lambda a: f"{a}.", DIGITS),
        st.builds(lambda b: f".{b}", DIGITS),
        st.sampled_from(["0", "00", "1", "2", "0.9999", "0.999", "1.0", "", "."]),
    )


QUANTITY_TEXT = st.one_of(
    *[
        st.builds(
            lambda sign, number, suffix: f"{sign}{number}{suffix}",
            SIGNS,
            _number(),
            st.one_of(*[SUFFIXES] * 4, EXPONENTS),
        )
    ]
    * 6,
    # Magnitudes around the int64 and 2^53 edges, and nano rounding.
    st.sampled_from(
        [
            "9007199254740991",
            "9007199254740992",
            "9223372036854775807",
            "9223372036854775808",
            "1e15",
            "1e16",
            "1e18",
            "1e99",
            "8Ei",
            "1e-9",
            "1e-12",
            "0.0000000001",
            "2097151.5",
            "2097152.0000000001",
        ]
    ),
    # Not quantities at all.
    st.sampled_from(["lots", "1.2.3", "1Kb", "1 Gi", "0x10", "1e", "e3", "--1", "1Gii", "∞"]),
    st.text(max_size=8),
)
# JSON decoding trims white space around a quantity's text; Python's str.strip would not
# match Go's strings.TrimSpace exactly, so only the common ones are tried.
PADDED = st.builds(
    lambda left, text, right: f"{left}{text}{right}",
    st.sampled_from(["", "", "", " ", "\t", "\n"]),
    QUANTITY_TEXT,
    st.sampled_from(["", "", "", " ", "\t"]),
)
# What users write, most of the time: valid amounts whole or not, in common units.
COMMON = st.one_of(
    st.integers(min_value=0, max_value=64),
    st.sampled_from(["500m", "1", "2", "4", "0.5", "1.5", "100m", "1Gi", "64Mi", "2Mi", "4Gi"]),
    st.builds(lambda n, unit: f"{n}{unit}", st.integers(1, 512), st.sampled_from(["Mi", "Gi"])),
)
QUANTITIES: st.SearchStrategy[int | str] = st.one_of(
    *[COMMON] * 6,
    st.integers(min_value=-3, max_value=5),
    st.integers(min_value=0, max_value=2**31),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    *[PADDED] * 4,
)

LABEL = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?", fullmatch=True)
SUBDOMAIN = st.builds(".".join, st.lists(LABEL, min_size=1, max_size=3))
NAME_PART = st.from_regex(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,8}[A-Za-z0-9])?", fullmatch=True)
# Page sizes: quantities whose text fits in a qualified name, and some that do not.
PAGE_SIZES = st.one_of(
    st.sampled_from(["2Mi", "1Gi", "1Mi", "4Ki", "1k", "1", "3", "64", "2M", "1e3", "1.5Ki"]),
    st.sampled_from(["0", "0.5", "0.9999", "1e1000", "1e15", "1e16", "foo", "-1", "1.", ""]),
    QUANTITY_TEXT.filter(lambda t: t.isascii() and t.isprintable() and " " not in t),
)

RESOURCE_NAMES = st.one_of(
    *[st.sampled_from(["cpu", "memory", "ephemeral-storage"])] * 10,
    # hugepages-<size>
    *[st.builds(lambda size: f"hugepages-{size}", PAGE_SIZES)] * 3,
    # Extended resources: domain-prefixed, outside kubernetes.io/.
    *[st.sampled_from(["nvidia.com/gpu", "example.com/gpu", "amd.com/gpu", "a.b/c"])] * 4,
    st.builds(lambda prefix, name: f"{prefix}/{name}", SUBDOMAIN, NAME_PART),
    # The kubernetes.io/ namespace: native, so neither extended nor integer.
    st.sampled_from(
        ["kubernetes.io/foo", "example.kubernetes.io/bar", "examplekubernetes.io/x", "k8s.io/y"]
    ),
    # Length edges of the prefix (253 for a qualified name, 244 for an extended one, which
    # must stay qualified with `requests.` in front) and of the name part (63).
    st.builds(
        lambda n, domain: "a" * (n - len(domain)) + domain + "/gpu",
        st.sampled_from([243, 244, 245, 252, 253, 254]),
        st.sampled_from([".kubernetes.io", ".com"]),
    ),
    st.builds(lambda n: "example.com/" + "g" * n, st.sampled_from([62, 63, 64])),
    # Names the API server refuses for containers, or accepts only elsewhere.
    st.sampled_from(
        [
            "requests.example.com/gpu",
            "requests.cpu",
            "pods",
            "storage",
            "hugepages-",
            "nvidia com/gpu",
            "a/b/c",
            "/gpu",
            "example.com/",
            "Example.com/gpu",
            "-x.com/gpu",
            "example.com/-gpu",
            "",
            "gpü.com/x",
        ]
    ),
    st.text(max_size=12),
)


# Names users write, for specs that are meant to be mostly right.
USUAL_NAMES = st.sampled_from(
    ["cpu", "memory", "ephemeral-storage", "hugepages-2Mi", "hugepages-1Gi", "nvidia.com/gpu"]
)


@st.composite
def resources(draw: st.DrawFn) -> dict[str, Any]:
    """limits and requests, often sharing names (requests == limits, or not). Half the specs
    lean towards what users write, so that both sides of the line are reached often."""
    usual = draw(st.booleans())
    names, values = (USUAL_NAMES, COMMON) if usual else (RESOURCE_NAMES, QUANTITIES)
    limits = draw(st.dictionaries(names, values, max_size=3))
    requests = draw(st.dictionaries(names, values, max_size=3))
    for name, value in limits.items():
        choice = draw(st.sampled_from(["same", "same", "other", "absent"]))
        if choice == "same":
            requests[name] = value
        elif choice == "other":
            requests[name] = draw(values)
        else:
            requests.pop(name, None)
    if draw(st.booleans()):
        # Hugepages need cpu or memory: often there, sometimes not.
        target = draw(st.sampled_from([limits, requests]))
        target.setdefault(draw(st.sampled_from(["cpu", "memory"])), draw(values))
    out: dict[str, Any] = {}
    if limits or draw(st.booleans()):
        out["limits"] = limits
    if requests or draw(st.booleans()):
        out["requests"] = requests
    return out


STORAGE_SIZES: st.SearchStrategy[int | str] = st.one_of(*[COMMON] * 3, QUANTITIES)
