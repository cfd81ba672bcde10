"""`ossec.conf` text to a tree of elements that remember their line, and `ConfigError`, which names it.

Wazuh files may hold several top-level `<ossec_config>` elements, which is not one XML document, so the
text is wrapped in a synthetic root opened on the first line (line numbers stay the file's) and parsed by
defusedxml's expat parser. The danger is the file itself: DTDs are refused, so no entity-expansion
("billion laughs") or external-entity attack gets through.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Final
from xml.etree.ElementTree import ParseError
from xml.parsers import expat

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser

__all__ = ["ConfigError", "Node", "parse_xml", "show"]


class ConfigError(Exception):
    """A configuration agentpulse refuses. The message names the file, line, element path and value."""

    def __init__(self, message: str, *, line: int | None = None, element: str | None = None) -> None:
        super().__init__(message)
        self.line = line
        self.element = element


ROOT: Final = "agentpulse-synthetic-root"
_XML_DECLARATION: Final = re.compile(r"\A[ \t\r\n]*<\?xml[^>]*\?>")
_NEWLINE: Final = re.compile(r"\r\n|\r|\n")
_TAG_MISMATCH: Final = expat.errors.codes[expat.errors.XML_ERROR_TAG_MISMATCH]


@dataclass(slots=True, eq=False)
class Node:
    """One element: its tag, attributes, the line of its start tag, its children and its text."""

    tag: str
    attrs: dict[str, str]
    line: int
    children: list[Node] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.parts).strip()


def show(value: str) -> str:
    """A value as an error message quotes it: repr, cut to 80 characters."""
    return repr(value if len(value) <= 80 else value[:77] + "...")


class _TreeBuilder:
    """The parser's target: builds `Node`s, taking each start tag's line from the expat parser."""

    def __init__(self) -> None:
        self.expat: Any = None
        self.stack: list[Node] = []
        self.root: Node | None = None
        self.stray_text: tuple[int, str] | None = None

    def start(self, tag: str, attrs: dict[str, str]) -> None:
        node = Node(tag, dict(attrs), int(self.expat.CurrentLineNumber))
        if self.stack:
            self.stack[-1].children.append(node)
        else:
            self.root = node
        self.stack.append(node)

    def end(self, tag: str) -> None:
        self.stack.pop()

    def data(self, text: str) -> None:
        if not self.stack:
            return
        self.stack[-1].parts.append(text)
        stripped = text.lstrip()
        if len(self.stack) == 1 and stripped and self.stray_text is None:
            line = int(self.expat.CurrentLineNumber) + text[: len(text) - len(stripped)].count("\n")
            self.stray_text = (line, stripped.strip())

    def close(self) -> Node | None:
        return self.root


def _blank(text: str) -> str:
    """The same text with everything but line breaks turned into spaces, so lines keep their numbers."""
    return re.sub(r"[^\r\n]", " ", text)


def _wrap(text: str) -> str:
    """The file's text inside the synthetic root, its byte order mark and XML declaration blanked."""
    if text.startswith("\ufeff"):
        text = " " + text[1:]
    # An XML declaration is only allowed at the very start of a document, which is now our root's.
    declaration = _XML_DECLARATION.match(text)
    if declaration is not None:
        text = _blank(declaration.group()) + text[declaration.end() :]
    return f"<{ROOT}>{text}</{ROOT}>"


def _parse_error(exc: ParseError, wrapped: str, builder: _TreeBuilder, source: str) -> ConfigError:
    line = exc.position[0]
    lines = _NEWLINE.split(wrapped)
    line_text = lines[line - 1] if 0 < line <= len(lines) else ""
    if "<!DOCTYPE" in line_text or "<!ENTITY" in line_text:
        reason = "<!DOCTYPE>: DTD and entity declarations are refused (entity expansion is an attack)"
    else:
        reason = f"malformed XML: {expat.ErrorString(exc.code)}"
        if exc.code == _TAG_MISMATCH and builder.stack:
            opened = builder.stack[-1]
            if opened.tag == ROOT:
                reason += " (a closing tag without its opening tag)"
            else:
                reason += f" (<{opened.tag}> opened at line {opened.line} is not closed)"
    return ConfigError(f"{source} line {line}: {reason}", line=line)


def parse_xml(text: str, source: str) -> Node:
    """The synthetic root holding the file's top-level elements; `source` names the file in errors."""
    wrapped = _wrap(text)
    builder = _TreeBuilder()
    parser = DefusedXMLParser(target=builder, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    builder.expat = parser.parser
    builder.expat.buffer_text = False  # text events as they come, so their line numbers are right
    try:
        parser.feed(wrapped)
        parser.close()
    except ParseError as exc:
        raise _parse_error(exc, wrapped, builder, source) from None
    except DefusedXmlException as exc:
        line = int(builder.expat.CurrentLineNumber)
        raise ConfigError(
            f"{source} line {line}: DTD and entity declarations are refused ({type(exc).__name__})", line=line
        ) from None
    except UnicodeError as exc:
        start = getattr(exc, "start", 0)
        line = wrapped[:start].count("\n") + 1
        raise ConfigError(f"{source} line {line}: text that is not valid Unicode", line=line) from None

    root = builder.root
    if root is None or root.tag != ROOT:  # cannot happen: expat refuses a document that is not our root
        raise ConfigError(f"{source}: malformed XML")
    if builder.stray_text is not None:
        line, stray = builder.stray_text
        raise ConfigError(
            f"{source} line {line}: text {show(stray)} outside <ossec_config>", line=line, element=None
        )
    return root
