"""Human-friendly counts: "1.8B" parameters, "500M" tokens, "2.5e9", "6e21" FLOPs; and usage 1's tolerance."""
from __future__ import annotations

import re

import numpy as np

_SUFFIX = {"": 1.0, "K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12, "P": 1e15}
_PATTERN = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([KMBGTP]?)\s*$", re.IGNORECASE)


def parse_count(value, field: str = "value") -> float:
    """Return a count (parameters, tokens, FLOPs) as float.

    Accepts numbers and strings such as ``"1.8B"``, ``"500M"``, ``"10k"``, ``"2.5e9"``.
    Raises ``ValueError`` naming ``field`` when the value cannot be read.
    """
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        m = _PATTERN.match(value.replace("_", "").replace(",", ""))
        if m:
            return float(m.group(1)) * _SUFFIX[m.group(2).upper()]
    raise ValueError(
        f"{field}={value!r} is not a count: give a number or a string such as '1.8B', '500M', '2.5e9'"
    )


def parse_counts(values, field: str = "value") -> np.ndarray:
    """Vectorised :func:`parse_count` for scalars, lists and arrays (strings allowed)."""
    arr = np.asarray(values, dtype=object) if not isinstance(values, np.ndarray) else values
    if arr.dtype != object and np.issubdtype(arr.dtype, np.number):
        return arr.astype(float)
    flat = [parse_count(v, field) for v in np.ravel(arr)]
    return np.asarray(flat, dtype=float).reshape(np.shape(arr))


def format_count(x: float) -> str:
    """Format 7e9 as '7B', 1.5e6 as '1.5M'."""
    for suffix, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{suffix}"
    return f"{x:.3g}"


def check_tolerance(tolerance) -> float:
    """Usage 1's tolerance as a float: the allowed rise of the general loss over the base model's, a share in
    [0, 1) (0.03 = 3%). Raises ``ValueError`` naming the fix otherwise (3 for 3% is the usual slip)."""
    try:
        t = float(tolerance)
    except (TypeError, ValueError):
        t = float("nan")
    if not (np.isfinite(t) and 0 <= t < 1):
        example = f"{t / 100:g} for {t:g}%" if 1 <= t < 100 else "0.03 for 3%"
        raise ValueError(f"tolerance={tolerance!r}: the allowed rise of the general loss over the base model's, a "
                         f"share in [0, 1): give {example}")
    return t
