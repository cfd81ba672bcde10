"""The files enrolment needs: the certificate made once (0600 key, an existing pair kept), the TLS context
(1.2+, ciphers), the agent certificate check, the password file."""

from __future__ import annotations

import ssl
import stat
from pathlib import Path

import pytest

from agentpulse.authd import tls
from agentpulse.config import AuthConfig


def test_a_pair_is_made_when_both_are_missing_and_kept_after(tmp_path: Path) -> None:
    cert, key = tmp_path / "etc" / "sslmanager.cert", tmp_path / "etc" / "sslmanager.key"
    made = tls.ensure_certificate(cert, key, names=("10.0.0.5",))
    assert made is not None and len(made.split(":")) == 32
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(cert.stat().st_mode) == 0o644
    assert tls.ensure_certificate(cert, key) is None
    context = tls.server_context(AuthConfig(), cert, key, None)
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2


def test_one_file_of_the_pair_without_the_other_is_an_error(tmp_path: Path) -> None:
    cert, key = tmp_path / "c", tmp_path / "k"
    cert.write_text("x")
    with pytest.raises(tls.AuthdSetupError, match="key file"):
        tls.ensure_certificate(cert, key)


def test_bad_ciphers_and_missing_files_are_setup_errors(tmp_path: Path) -> None:
    cert, key = tmp_path / "c", tmp_path / "k"
    tls.ensure_certificate(cert, key)
    with pytest.raises(tls.AuthdSetupError, match="ciphers"):
        tls.server_context(AuthConfig(ciphers="NOTHING-AT-ALL"), cert, key, None)
    with pytest.raises(tls.AuthdSetupError, match="agents' CA"):
        tls.server_context(AuthConfig(), cert, key, tmp_path / "missing-ca.pem")


def test_auto_negotiate_lifts_the_tls_1_2_floor(tmp_path: Path) -> None:
    cert, key = tmp_path / "c", tmp_path / "k"
    tls.ensure_certificate(cert, key)
    context = tls.server_context(AuthConfig(ssl_auto_negotiate=True), cert, key, None)
    assert context.minimum_version is ssl.TLSVersion.MINIMUM_SUPPORTED


@pytest.mark.parametrize(
    ("peercert", "source", "ok"),
    [
        ({"subjectAltName": (("IP Address", "10.0.0.7"),)}, "10.0.0.7", True),
        ({"subjectAltName": (("IP Address", "10.0.0.8"),)}, "10.0.0.7", False),
        ({"subject": ((("commonName", "10.0.0.7"),),)}, "10.0.0.7", True),
        ({"subject": ((("commonName", "agent"),),)}, "10.0.0.7", False),
        ({"subjectAltName": (("IP Address", "2001:DB8:0:0:0:0:0:1\n"),)}, "2001:db8::1", True),
    ],
)
def test_verify_host_wants_the_source_address_in_the_certificate(
    peercert: dict[str, object], source: str, ok: bool
) -> None:
    assert tls.names_address(peercert, source) is ok


def test_the_password_is_the_first_line_and_a_missing_file_gets_a_random_one(tmp_path: Path) -> None:
    path = tmp_path / "authd.pass"
    made = tls.load_password(path)
    assert made.generated and len(made.text) == 32
    assert path.read_text() == made.text + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    again = tls.load_password(path)
    assert (again.text, again.generated) == (made.text, False)
    path.write_text("topsecret\nsecond line\n")
    assert tls.load_password(path).text == "topsecret"
    path.write_text("\n")
    with pytest.raises(tls.AuthdSetupError, match="Empty password"):
        tls.load_password(path)
