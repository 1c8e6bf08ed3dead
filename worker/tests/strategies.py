"""Hypothesis strategies shared by the property tests (test_properties.py, tests/worker_faults/test_properties_live.py).

Sizes are parameters: the unit tests draw larger values, the live test against PostgreSQL
smaller ones (each example costs database round trips).
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st


def scalars(*, max_text: int) -> st.SearchStrategy[Any]:
    """JSON scalars and what JSON cannot hold exactly: big integers, NaN and the infinities."""
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**80), max_value=2**80),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=max_text),
    )


def json_values(
    leaves: st.SearchStrategy[Any], *, max_items: int, max_key: int, max_leaves: int
) -> st.SearchStrategy[Any]:
    """Nested lists and objects of `leaves`."""
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.lists(inner, max_size=max_items), st.dictionaries(st.text(max_size=max_key), inner, max_size=max_items)
        ),
        max_leaves=max_leaves,
    )
