"""The fleet page shows agent-supplied text (names, versions, OS, groups, reasons): it must reach the DOM as
text, never as markup (issue 17 item 3, "any HTML"). The page's script is checked for every sink that parses
HTML, and the page is served with a policy that refuses inline and foreign scripts."""

from __future__ import annotations

import re
from pathlib import Path

import agentpulse.api

PAGE = Path(agentpulse.api.__file__).parent / "page"
HTML_SINKS = re.compile(
    r"\.innerHTML|\.outerHTML|insertAdjacentHTML|document\.write|createContextualFragment|\beval\(|new Function"
)


def test_the_page_script_writes_text_only() -> None:
    script = (PAGE / "app.js").read_text()
    assert "textContent" in script  # how it writes agent text
    assert HTML_SINKS.findall(script) == []


def test_the_page_has_no_inline_script_or_handler() -> None:
    html = (PAGE / "index.html").read_text()
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html) == []  # every script is a file the CSP allows
    assert re.findall(r"\son[a-z]+\s*=", html) == []


def test_the_page_policy_refuses_inline_and_foreign_scripts() -> None:
    from agentpulse.api.service import PAGE_POLICY

    directives = dict(part.strip().split(" ", 1) for part in PAGE_POLICY.split(";") if part.strip())
    scripts = directives.get("script-src", directives["default-src"])  # CSP's fallback
    assert scripts.split() == ["'self'"]  # no 'unsafe-inline', no 'unsafe-eval', no other origin
