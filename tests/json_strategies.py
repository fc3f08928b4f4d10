"""Hypothesis strategies for fuzzing with arbitrary JSON documents (what a client can send as a workflow)."""

from __future__ import annotations

from hypothesis import strategies as st

__all__ = ["json_leaves", "json_values"]

# Finite floats only: NaN and Infinity are not JSON, a client cannot send them.
json_leaves = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) \
    | st.text(max_size=12)
json_values = st.recursive(
    json_leaves,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
