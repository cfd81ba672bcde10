"""ossec.conf section by section: blocks merged, repeated options, unknown elements, and reading the file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agentpulse.config import Config, ConfigError, load_config, parse_config
from tests.config.helpers import SECURE, assert_error, conf, in_sections

# ---------------------------------------------------------------------------------------------------------
# File structure


def test_several_ossec_config_blocks_are_merged() -> None:
    text = (
        f"<ossec_config><remote>{SECURE}<port>1600</port></remote></ossec_config>\n"
        "<ossec_config><global><node_name>n2</node_name></global></ossec_config>\n"
        "<ossec_config><nats><enabled>yes</enabled></nats></ossec_config>\n"
    )
    config = parse_config(text)
    assert (config.remote.port, config.global_.node_name, config.nats.enabled) == (1600, "n2", True)


def test_a_repeated_option_takes_the_last_value_like_wazuh() -> None:
    text = conf(
        "<global><agents_disconnection_time>10m</agents_disconnection_time></global>\n"
        "<global><agents_disconnection_time>1d</agents_disconnection_time></global>"
    )
    assert parse_config(text).global_.agents_disconnection_time == 86400.0


def test_sections_agentpulse_does_not_know_are_ignored() -> None:
    assert parse_config(conf("<made_up_section><anything>at all</anything></made_up_section>")) == Config()


def test_root_element_other_than_ossec_config_is_an_error() -> None:
    text = "<ossec_config></ossec_config>\n<agent_config></agent_config>\n"
    assert_error(text, "<agent_config>", "<agent_config>", "expected <ossec_config>")


def test_file_without_ossec_config_is_an_error() -> None:
    with pytest.raises(ConfigError, match="no <ossec_config>"):
        parse_config("<!-- nothing here -->\n")


# ---------------------------------------------------------------------------------------------------------
# Elements inside a section


@pytest.mark.parametrize(
    "path",
    [
        "<remote><prot>",
        "<remote><manager_keepalive><prot>",
        "<remote><agents><prot>",
        "<global><prot>",
        "<nats><prot>",
        "<database><prot>",
    ],
)
def test_unknown_element_in_a_section_we_read_is_an_error(path: str) -> None:
    assert_error(in_sections(path, "tcp"), "<prot>", f"{path}: unknown element")


def test_unknown_element_error_does_not_repeat_its_value() -> None:
    error = assert_error(conf("<nats>\n<pasword>hunter2</pasword></nats>"), "<pasword>", "<nats><pasword>")
    assert "hunter2" not in str(error)


def test_value_element_with_child_elements_is_an_error() -> None:
    text = conf(f"<remote>{SECURE}\n<port><number>1514</number></port></remote>")
    assert_error(text, "<port>", "<remote><port>", "expected a value")


# ---------------------------------------------------------------------------------------------------------
# Reading the file


def test_load_config_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "ossec.conf"
    path.write_text(conf(f"<remote>{SECURE}<port>1600</port></remote>"), encoding="utf-8")
    assert load_config(path).remote.port == 1600


def test_load_config_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "ossec.conf"
    path.write_text(conf(f"<remote>{SECURE}\n<port>abc</port></remote>"), encoding="utf-8")
    with pytest.raises(
        ConfigError, match=rf"^{re.escape(str(path))} line 3: <remote><port>: invalid value 'abc'"
    ):
        load_config(path)


def test_missing_file_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "missing.conf"
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: file not found$"):
        load_config(path)


def test_unreadable_path_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(tmp_path))}: cannot read"):
        load_config(tmp_path)


def test_file_that_is_not_utf8_is_an_error_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "ossec.conf"
    path.write_bytes(b"<ossec_config>\n<global>\n<node_name>caf\xe9</node_name></global></ossec_config>")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))} line 3: .*UTF-8"):
        load_config(path)
