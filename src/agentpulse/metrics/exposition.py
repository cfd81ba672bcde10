"""The Prometheus text exposition format 0.0.4: metric families in, the bytes of a scrape out.

No I/O, no clock. The danger is a value that breaks the format: a label value or help text with a
quote, a backslash or a newline must be escaped, or one bad string corrupts every line after it (and a
scraper drops the whole scrape). Names are checked once, when a family is made; label values here come
from closed sets of our own, but are escaped all the same.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")

Labels = tuple[tuple[str, str], ...]
_VALID_LABELS: set[str] = set()  # label names already checked: a scrape adds hundreds of samples


class MetricType(enum.StrEnum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


@dataclass(frozen=True, slots=True)
class Sample:
    """One line: `<family name><suffix>{labels} value` (suffix `_bucket`, `_sum`, `_count` or none)."""

    labels: Labels
    value: float
    suffix: str = ""


@dataclass(slots=True)
class Family:
    name: str
    type: MetricType
    help: str
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"invalid metric name {self.name!r}")
        if self.type is MetricType.COUNTER and not self.name.endswith("_total"):
            raise ValueError(f"a counter's name ends in _total: {self.name!r}")

    def add(self, value: float, labels: Labels = (), suffix: str = "") -> None:
        for name, _ in labels:
            if name not in _VALID_LABELS:
                if not _LABEL.match(name) or name.startswith("__"):
                    raise ValueError(f"invalid label name {name!r} in {self.name}")
                _VALID_LABELS.add(name)
        self.samples.append(Sample(labels, value, suffix))


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def escape_label_value(text: str) -> str:
    if "\\" not in text and '"' not in text and "\n" not in text:
        return text
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_value(value: float) -> str:
    """As Prometheus' Go clients write numbers: integers without a point, +Inf, -Inf, NaN."""
    if type(value) is int:
        return str(value)
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def format_labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{name}="{escape_label_value(value)}"' for name, value in labels) + "}"


def render(families: Iterable[Family]) -> bytes:
    """Every family as its HELP and TYPE lines and its samples, in the order given."""
    lines: list[str] = []
    for family in families:
        lines.append(f"# HELP {family.name} {escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.type.value}")
        for sample in family.samples:
            lines.append(
                f"{family.name}{sample.suffix}{format_labels(sample.labels)} {format_value(sample.value)}"
            )
    lines.append("")
    return "\n".join(lines).encode()


def label_text(words: str) -> str:
    """Free words of our own (an enrolment refusal kind) as a label value: `Invalid IP` -> `invalid_ip`."""
    return re.sub(r"[^a-z0-9]+", "_", words.lower()).strip("_") or "other"


def bucket_bound(bound: float) -> str:
    """The `le` label of a bucket: `0.005`, `1.0`, `+Inf` (as the Go and Python clients write it)."""
    if math.isinf(bound):
        return "+Inf"
    return repr(float(bound))
