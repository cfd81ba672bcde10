"""JSON from an agent is bounded in size and nesting before it is parsed: deep nesting is a WireError with a
reason, never a RecursionError, and the pre-scan agrees with the parser about what is nested."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentpulse.wire import boundedjson
from agentpulse.wire.boundedjson import MAX_DEPTH, MAX_SIZE, nesting_depth
from agentpulse.wire.errors import Reason, WireError


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def _json_depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max((_json_depth(item) for item in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_json_depth(item) for item in value.values()), default=0)
    return 0


def test_nesting_at_the_limit_is_parsed() -> None:
    assert boundedjson.loads(nested(MAX_DEPTH)) == json.loads(nested(MAX_DEPTH))


def test_nesting_one_level_past_the_limit_is_refused_as_json_limit() -> None:
    with pytest.raises(WireError) as caught:
        boundedjson.loads(nested(MAX_DEPTH + 1))
    assert caught.value.reason is Reason.JSON_LIMIT
    assert f"nested deeper than {MAX_DEPTH}" in str(caught.value)


def test_a_hundred_thousand_levels_are_refused_quickly_without_recursion_error() -> None:
    text = '{"version":' + "[" * 100_000
    start = time.perf_counter()
    with pytest.raises(WireError) as caught:
        boundedjson.loads(text, max_size=len(text))
    assert caught.value.reason is Reason.JSON_LIMIT
    assert time.perf_counter() - start < 0.5


def test_closers_before_the_openers_are_invalid_json_not_deep_json() -> None:
    # json.loads stops at the first "]" before any recursion: ValueError, as for any invalid JSON.
    with pytest.raises(ValueError):
        boundedjson.loads("]" * 50 + "[" * 50, max_size=1000)


def test_text_longer_than_the_size_limit_is_refused_before_parsing() -> None:
    text = json.dumps({"version": "v" * MAX_SIZE})
    with pytest.raises(WireError) as caught:
        boundedjson.loads(text)
    assert caught.value.reason is Reason.JSON_LIMIT
    assert f"> {MAX_SIZE}" in str(caught.value)


def test_brackets_inside_strings_do_not_count() -> None:
    text = json.dumps({"version": "[" * 200 + '\\"[' + "{" * 200})
    assert nesting_depth(text, MAX_DEPTH) == 1
    assert boundedjson.loads(text) == json.loads(text)


def test_an_escaped_backslash_ends_before_the_closing_quote() -> None:
    text = '["a\\\\", [[[]]]]'  # the string is a\ ; the brackets after it count
    assert nesting_depth(text, 3) == 4


def test_invalid_json_within_bounds_is_a_value_error_as_from_json_loads() -> None:
    with pytest.raises(ValueError):
        boundedjson.loads('{"version": "v1"]')


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab', max_size=8),
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(st.text(alphabet='[]{}"\\k', max_size=4), children, max_size=3)
        ),
        max_leaves=40,
    )
)
def test_the_pre_scan_measures_the_depth_the_parser_sees(value: object) -> None:
    text = json.dumps(value)
    depth = _json_depth(value)
    assert nesting_depth(text, 1000) == depth
    if depth <= MAX_DEPTH:
        assert boundedjson.loads(text, max_size=len(text)) == value
