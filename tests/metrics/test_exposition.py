"""The text exposition format 0.0.4: HELP and TYPE lines, escaping, numbers, histogram samples."""

from __future__ import annotations

import math

import pytest

from agentpulse.metrics.exposition import (
    CONTENT_TYPE,
    Family,
    MetricType,
    escape_label_value,
    format_value,
    label_text,
    render,
)
from agentpulse.metrics.histogram import Histogram


def test_content_type_is_the_text_format_0_0_4() -> None:
    assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


def test_each_family_has_its_help_and_type_lines_before_its_samples() -> None:
    agents = Family("agentpulse_agents", MetricType.GAUGE, "Agents by status")
    agents.add(3, (("status", "active"),))
    agents.add(0, (("status", "pending"),))
    total = Family("agentpulse_keepalives_total", MetricType.COUNTER, "Keep-alives")
    total.add(12)
    assert render([agents, total]).decode() == (
        "# HELP agentpulse_agents Agents by status\n"
        "# TYPE agentpulse_agents gauge\n"
        'agentpulse_agents{status="active"} 3\n'
        'agentpulse_agents{status="pending"} 0\n'
        "# HELP agentpulse_keepalives_total Keep-alives\n"
        "# TYPE agentpulse_keepalives_total counter\n"
        "agentpulse_keepalives_total 12\n"
    )


def test_label_values_escape_backslash_quote_and_newline() -> None:
    assert escape_label_value('a\\b"c\nd') == 'a\\\\b\\"c\\nd'
    family = Family("x", MetricType.GAUGE, "x")
    family.add(1, (("reason", 'bad"\n'),))
    assert 'x{reason="bad\\"\\n"} 1\n' in render([family]).decode()


def test_help_text_escapes_backslash_and_newline_but_not_quotes() -> None:
    family = Family("x", MetricType.GAUGE, 'one\ntwo \\ "three"')
    assert render([family]).decode().splitlines()[0] == '# HELP x one\\ntwo \\\\ "three"'


@pytest.mark.parametrize(
    ("value", "text"),
    [(0, "0"), (7, "7"), (True, "1"), (2.0, "2"), (0.25, "0.25"), (math.inf, "+Inf"), (-math.inf, "-Inf")],
)
def test_numbers_are_written_as_prometheus_reads_them(value: float, text: str) -> None:
    assert format_value(value) == text


def test_nan_is_written_nan() -> None:
    assert format_value(math.nan) == "NaN"


def test_a_counter_name_must_end_in_total() -> None:
    with pytest.raises(ValueError, match="_total"):
        Family("agentpulse_keepalives", MetricType.COUNTER, "x")


@pytest.mark.parametrize("name", ["", "9lives", "has space", "dash-ed"])
def test_invalid_metric_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="invalid metric name"):
        Family(name, MetricType.GAUGE, "x")


@pytest.mark.parametrize("label", ["__reserved", "with-dash", "1st"])
def test_invalid_label_names_are_refused(label: str) -> None:
    family = Family("x", MetricType.GAUGE, "x")
    with pytest.raises(ValueError, match="invalid label name"):
        family.add(1, ((label, "v"),))


def test_free_words_become_a_label_value() -> None:
    assert label_text("Invalid IP") == "invalid_ip"
    assert label_text(" Agent version must be lower or equal to manager version") == (
        "agent_version_must_be_lower_or_equal_to_manager_version"
    )
    assert label_text("!!!") == "other"


def test_histogram_buckets_are_cumulative_and_end_with_inf_equal_to_count() -> None:
    histogram = Histogram((0.1, 1.0, 10.0))
    for value in (0.05, 0.1, 0.5, 3.0, 50.0):
        histogram.observe(value)
    family = Family("agentpulse_store_flush_seconds", MetricType.HISTOGRAM, "Flush time")
    histogram.add_to(family, (("kind", "status"),))
    lines = render([family]).decode().splitlines()
    assert lines[1] == "# TYPE agentpulse_store_flush_seconds histogram"
    assert lines[2:] == [
        'agentpulse_store_flush_seconds_bucket{kind="status",le="0.1"} 2',  # 0.1 itself is in le=0.1
        'agentpulse_store_flush_seconds_bucket{kind="status",le="1.0"} 3',
        'agentpulse_store_flush_seconds_bucket{kind="status",le="10.0"} 4',
        'agentpulse_store_flush_seconds_bucket{kind="status",le="+Inf"} 5',
        'agentpulse_store_flush_seconds_sum{kind="status"} 53.65',
        'agentpulse_store_flush_seconds_count{kind="status"} 5',
    ]


def test_an_empty_histogram_has_every_bucket_at_zero() -> None:
    family = Family("h", MetricType.HISTOGRAM, "h")
    Histogram((1, 2)).add_to(family)
    assert [sample.value for sample in family.samples] == [0, 0, 0, 0.0, 0]


def test_histogram_bounds_must_increase() -> None:
    with pytest.raises(ValueError, match="increasing"):
        Histogram((1.0, 0.5))


def test_the_reference_parser_reads_what_we_write() -> None:
    """prometheus_client's parser (when installed) agrees with our text, escapes included."""
    parser = pytest.importorskip("prometheus_client.parser")
    family = Family("agentpulse_refusals_total", MetricType.COUNTER, "Refusals\nby reason")
    family.add(4, (("worker", "1"), ("reason", 'wrong "key"\\')))
    histogram = Family("agentpulse_store_flush_seconds", MetricType.HISTOGRAM, "Flush")
    observed = Histogram((0.5, 1.0))
    observed.observe(0.7)
    observed.add_to(histogram)
    parsed = {f.name: f for f in parser.text_string_to_metric_families(render([family, histogram]).decode())}
    refusals = parsed["agentpulse_refusals"]
    assert refusals.type == "counter"
    assert refusals.documentation == "Refusals\nby reason"
    assert refusals.samples[0].labels == {"worker": "1", "reason": 'wrong "key"\\'}
    assert refusals.samples[0].value == 4
    flush = parsed["agentpulse_store_flush_seconds"]
    assert [(s.name, s.labels.get("le"), s.value) for s in flush.samples] == [
        ("agentpulse_store_flush_seconds_bucket", "0.5", 0),
        ("agentpulse_store_flush_seconds_bucket", "1.0", 1),
        ("agentpulse_store_flush_seconds_bucket", "+Inf", 1),
        ("agentpulse_store_flush_seconds_sum", None, 0.7),
        ("agentpulse_store_flush_seconds_count", None, 1),
    ]
