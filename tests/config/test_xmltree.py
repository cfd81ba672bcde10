"""ossec.conf as XML: declarations, comments, and the errors of a broken or hostile file, each naming its line."""

from __future__ import annotations

import contextlib

from hypothesis import given
from hypothesis import strategies as st

from agentpulse.config import ConfigError, parse_config
from tests.config.helpers import SECURE, assert_error, conf, error_of

# ---------------------------------------------------------------------------------------------------------
# The XML itself


def test_xml_declaration_and_byte_order_mark_are_accepted_and_lines_stay_right() -> None:
    text = '\ufeff<?xml version="1.0" encoding="UTF-8"?>\n' + conf(
        f"<remote>{SECURE}\n<port>0</port></remote>"
    )
    assert_error(text, "<port>0", "<remote><port>", "'0'")


def test_comments_are_ignored() -> None:
    text = conf(f"<!-- <remote> -->\n<remote>{SECURE}<!-- <port>x</port> --><port>2000</port></remote>")
    assert parse_config(text).remote.port == 2000


@given(st.text(max_size=200))
def test_parse_config_raises_only_config_error(text: str) -> None:
    with contextlib.suppress(ConfigError):
        parse_config(text)


@given(st.text(alphabet="<>/!-?&;= \n\"'abc[]", max_size=120))
def test_parse_config_raises_only_config_error_on_markup_soup(text: str) -> None:
    with contextlib.suppress(ConfigError):
        parse_config(f"<ossec_config>{text}</ossec_config>")


# ---------------------------------------------------------------------------------------------------------
# Errors: the file itself


def test_mismatched_tag_is_an_error_with_the_parsers_line() -> None:
    text = "<ossec_config>\n  <remote>\n    <port>1514</prot>\n  </remote>\n</ossec_config>\n"
    assert_error(text, "</prot>", "malformed XML: mismatched tag", "<port> opened at line 3")


def test_unclosed_ossec_config_is_an_error() -> None:
    error = error_of("<ossec_config>\n  <global>\n  </global>\n")
    assert "malformed XML" in str(error)
    assert "<ossec_config> opened at line 1 is not closed" in str(error)


def test_invalid_xml_character_is_an_error_with_its_line() -> None:
    text = conf("<global>\n<node_name>a\x01b</node_name></global>")
    assert_error(text, "\x01", "malformed XML")


def test_undefined_entity_reference_is_an_error() -> None:
    text = conf("<global>\n<node_name>&xxe;</node_name></global>")
    assert_error(text, "&xxe;", "malformed XML", "undefined entity")


def test_entity_expansion_attack_is_refused_before_any_expansion() -> None:
    text = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<ossec_config><global><node_name>&lol3;</node_name></global></ossec_config>
"""
    assert_error(text, "<!DOCTYPE", "<!DOCTYPE>", "DTD and entity declarations are refused")


def test_external_entity_is_refused() -> None:
    text = (
        '<!DOCTYPE ossec_config [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
        "<ossec_config><global><node_name>&xxe;</node_name></global></ossec_config>"
    )
    assert_error(text, "<!DOCTYPE", "DTD and entity declarations are refused")


def test_text_outside_ossec_config_is_an_error() -> None:
    text = "<ossec_config></ossec_config>\n\n  stray words\n"
    assert_error(text, "stray", "'stray words'", "outside <ossec_config>")
