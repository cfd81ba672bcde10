"""Reading an `ossec.conf` section by section: the file's text, its sections, and a field-table reader.

One file serves the manager (`config.manager`) and the agent (`agentpulse.agent.config`), each reading
the sections it owns with a `SectionReader`. Inside a section we read, an element nobody knows is an
error: a typo must not silently leave a default in place. Sections nobody reads are skipped.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from agentpulse.config.convert import Convert, Invalid
from agentpulse.config.xmltree import ConfigError, Node, parse_xml, show

__all__ = ["Fields", "SectionReader", "Sections", "Values", "parse_sections", "read_config_text"]

_T = TypeVar("_T")

# element tag -> (dataclass field, converter)
Fields = Mapping[str, tuple[str, Convert]]

# section tag -> the sections of that tag, from every <ossec_config> block in file order
Sections = dict[str, list[Node]]


def read_config_text(path: str | os.PathLike[str]) -> tuple[str, str]:
    """(text, source) of an `ossec.conf` file; a missing, unreadable or non-UTF-8 file is a `ConfigError`."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as file:
            data = file.read()
    except FileNotFoundError:
        raise ConfigError(f"{source}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{source} line {line}: the file is not valid UTF-8", line=line) from None
    return text, source


def parse_sections(text: str, source: str) -> Sections:
    """The sections of every `<ossec_config>` block, merged; any other top-level element is an error."""
    root = parse_xml(text, source)
    sections: Sections = {}
    for block in root.children:
        if block.tag != "ossec_config":
            raise SectionReader(source).error(
                block, f"<{block.tag}>", "unexpected root element; expected <ossec_config>"
            )
        for section in block.children:
            sections.setdefault(section.tag, []).append(section)
    if not root.children:
        raise ConfigError(f"{source}: no <ossec_config> element")
    return sections


@dataclass(slots=True)
class Values:
    """The fields read so far for one dataclass, and where each came from (for cross-field errors)."""

    kwargs: dict[str, Any] = field(default_factory=dict)
    origin: dict[str, tuple[Node, str]] = field(default_factory=dict)


class SectionReader:
    """Reads elements through field tables; every error names `source`, the line and the element path."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, node: Node, path: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source} line {node.line}: {path}: {message}", line=node.line, element=path)

    def value(self, node: Node, path: str, convert: Callable[[str], _T]) -> _T:
        if node.children:
            raise self.error(node, path, f"expected a value, found element <{node.children[0].tag}>")
        text = node.text
        try:
            return convert(text)
        except Invalid as exc:
            raise self.error(node, path, f"invalid value {show(text)}: {exc.expected}") from None

    def read(
        self,
        node: Node,
        path: str,
        fields: Fields,
        into: Values,
        *,
        nested: Mapping[str, Callable[[Node, str], None]] | None = None,
        ignored: frozenset[str] = frozenset(),
    ) -> None:
        """Read the children of `node` into `into`; an element neither known nor ignored is an error."""
        nested = nested or {}
        for child in node.children:
            child_path = f"{path}<{child.tag}>"
            if child.tag in fields:
                name, convert = fields[child.tag]
                into.kwargs[name] = self.value(child, child_path, convert)
                into.origin[name] = (child, child_path)
            elif child.tag in nested:
                nested[child.tag](child, child_path)
            elif child.tag not in ignored:
                known = ", ".join(f"<{tag}>" for tag in sorted([*fields, *nested]))
                raise self.error(child, child_path, f"unknown element (known: {known})")
