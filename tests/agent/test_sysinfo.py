"""The keep-alive's uname line: built from this machine, read back by the manager's parser."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import pytest

from agentpulse.agent.sysinfo import (
    AGENT_VERSION,
    OS_RELEASE,
    OsInfo,
    os_info_from_release,
    parse_os_release,
    read_os_info,
    shared_sums,
    this_machine,
    uname_line,
)
from agentpulse.paths import Home
from agentpulse.wire import control
from agentpulse.wire.keys import md5hex


class Uname(NamedTuple):
    sysname: str
    nodename: str
    release: str
    version: str
    machine: str


def parsed(line: str) -> control.Keepalive:
    """What the manager reads from a keep-alive carrying this uname line."""
    payload = control.build_keepalive(line, merged_sum=None)
    return control.parse_keepalive(payload[len(control.CONTROL_HEADER) :])


@pytest.mark.skipif(read_os_info() is None, reason=f"{OS_RELEASE} does not name this OS")
def test_uname_of_this_machine_parses_back_into_its_os_fields() -> None:
    info = read_os_info()
    assert info is not None
    uname = os.uname()
    keepalive = parsed(this_machine())
    release = parse_os_release(OS_RELEASE.read_text())
    assert keepalive.uname == " |".join(
        (uname.sysname, uname.nodename, uname.release, uname.version, uname.machine)
    )
    assert keepalive.os_name == release["NAME"]
    assert keepalive.os_platform == release["ID"]
    assert keepalive.os_version is not None
    assert info.version.startswith(keepalive.os_version)
    if "VERSION_ID" in release:
        assert keepalive.os_version.startswith(release["VERSION_ID"])
    if uname.machine in control.ARCHITECTURES:
        assert keepalive.os_arch == uname.machine
    assert keepalive.version == f"Wazuh {AGENT_VERSION}"


def test_uname_line_has_wazuhs_getuname_shape() -> None:
    uname = Uname("Linux", "host", "5.15.0-105-generic", "#115-Ubuntu SMP", "x86_64")
    info = OsInfo("Ubuntu", "ubuntu", "22.04.4 LTS (Jammy Jellyfish)")
    assert uname_line(uname, info) == (
        "Linux |host |5.15.0-105-generic |#115-Ubuntu SMP |x86_64 "
        "[Ubuntu|ubuntu: 22.04.4 LTS (Jammy Jellyfish)] - Wazuh v4.14.7"
    )
    keepalive = parsed(uname_line(uname, info))
    assert (keepalive.os_name, keepalive.os_platform, keepalive.os_version) == (
        "Ubuntu",
        "ubuntu",
        "22.04.4 LTS",
    )
    assert (keepalive.os_codename, keepalive.os_major, keepalive.os_minor) == ("Jammy Jellyfish", "22", "04")
    assert keepalive.os_arch == "x86_64"


def test_without_os_information_the_line_falls_back_to_plain_uname() -> None:
    uname = Uname("Linux", "host", "6.1.0", "#1 SMP", "aarch64")
    line = uname_line(uname, None)
    assert line == "Linux host 6.1.0 #1 SMP aarch64 - Wazuh v4.14.7"
    keepalive = parsed(line)
    assert keepalive.os_name is None
    assert keepalive.os_arch == "aarch64"
    assert keepalive.version == "Wazuh v4.14.7"


def test_os_release_without_version_uses_version_id_and_codename() -> None:
    fields = parse_os_release(
        '# comment\nNAME="Debian GNU/Linux"\nID=debian\nVERSION_ID="13"\nVERSION_CODENAME=trixie\n'
    )
    assert os_info_from_release(fields) == OsInfo("Debian GNU/Linux", "debian", "13 (trixie)")


def test_os_release_without_a_name_gives_no_os_information() -> None:
    assert os_info_from_release(parse_os_release("ID=x\nVERSION=1\n")) is None


def test_shared_sums_are_md5_of_merged_mg_and_agent_conf_or_none(tmp_path: Path) -> None:
    home = Home(tmp_path)
    assert (shared_sums(home).merged_sum, shared_sums(home).config_sum) == (None, None)
    shared = tmp_path / "etc" / "shared"
    shared.mkdir(parents=True)
    (shared / "merged.mg").write_bytes(b"#default\n")
    (shared / "agent.conf").write_bytes(b"<agent_config/>\n")
    sums = shared_sums(home)
    assert sums.merged_sum == md5hex(b"#default\n")
    assert sums.config_sum == md5hex(b"<agent_config/>\n")
