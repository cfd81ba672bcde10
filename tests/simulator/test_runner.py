"""`agentpulse simulate` end to end: small fleets against a real manager, or a scripted one."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest

from agentpulse.cli.main import main
from agentpulse.simulator.keys import create_keys
from agentpulse.wire import control
from agentpulse.wire.frames import FrameDecoder, encode_frame
from agentpulse.wire.keys import AgentKey
from agentpulse.wire.secure import AgentCipher, CipherKind, split_header
from tests.e2e.harness import LOOPBACK, ManagerProcess, ManagerSettings


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[ManagerProcess]:
    process = ManagerProcess(tmp_path / "ossec", ManagerSettings(connection_grace=30))
    try:
        yield process
    finally:
        process.stop()


def simulate_args(manager: ManagerProcess, agents: int, *extra: str) -> list[str]:
    return [
        "simulate",
        "--manager",
        f"{LOOPBACK}:{manager.port}",
        "--agents",
        str(agents),
        "--progress",
        "never",
        *extra,
    ]


def started_with_keys(manager: ManagerProcess, agents: int, *extra: str) -> list[str]:
    """Register `agents` simulated agents, start the manager, and give the `simulate` arguments for them."""
    manager.home.create_layout()
    create_keys(manager.home.client_keys, agents)
    manager.start()
    return simulate_args(manager, agents, "--keys", str(manager.home.client_keys), *extra)


def simulate_here(capsys: pytest.CaptureFixture[str], args: list[str]) -> tuple[int, dict[str, object]]:
    code = main(args)
    summary: dict[str, object] = json.loads(capsys.readouterr().out)
    return code, summary


def simulate_process(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "agentpulse", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.mark.parametrize("reads", [[], ["--batch-reads"]], ids=["reads", "batch-reads"])
def test_small_fleet_with_created_keys_is_all_connected_acked_and_kept_alive(
    manager: ManagerProcess, capsys: pytest.CaptureFixture[str], tmp_path: Path, reads: list[str]
) -> None:
    manager.start()  # the keys are created after the start: refused until the manager reloads them (1 s)
    args = simulate_args(manager, 50, "--create-keys", str(manager.home.client_keys), *reads)
    args += ["--retry-interval", "0.3"]  # not Wazuh's 10 s: the run lasts 3 s
    code, summary = simulate_here(
        capsys,
        [
            *args,
            "--interval",
            "0.5",
            "--ramp",
            "0.5",
            "--duration",
            "3",
            "--json-out",
            str(tmp_path / "s.json"),
        ],
    )
    assert code == 0, summary
    assert (summary["agents"], summary["connected"], summary["acked"]) == (50, 50, 50)
    assert summary["errors"] == 0 and summary["error_kinds"] == {}
    assert isinstance(summary["keepalives_acked"], int) and summary["keepalives_acked"] > 50
    assert summary["keepalives_acked"] == summary["keepalives_sent"]
    latency = summary["ack_latency_ms"]
    assert isinstance(latency, dict) and 0 < latency["p50"] <= latency["p99"] <= latency["max"]
    assert summary["processes"] == 1
    # The generator's own lateness: a startup per connect that completed (one for each startup acked, and
    # those refused before the reload), and one loop turn per 10 ms tick, give or take.
    to_startup, tick = summary["connected_to_startup_ms"], summary["tick_ms"]
    assert (
        isinstance(to_startup, dict) and to_startup["count"] >= summary["startup_latency_ms"]["count"] == 50
    )
    assert (
        to_startup["p50"] < 10.0
    )  # written with the connect, not a tick or two later (batch reads: >= 20 ms)
    assert isinstance(tick, dict) and 3.0 / 0.010 * 1.1 > tick["count"] > 3.0 / 0.050  # a 3 s run
    assert json.loads((tmp_path / "s.json").read_text()) == summary
    assert Counter(status for status, _ in manager.statuses().values()) == {"active": 50}


def test_silent_and_shutdown_agents_end_disconnected_with_their_codes(manager: ManagerProcess) -> None:
    manager.settings = ManagerSettings(
        connection_grace=30, keepalive_enabled=True, keepalive_interval=0.5, keepalive_timeout=1.5
    )
    args = started_with_keys(manager, 40)
    failures = ["--silent-share", "0.25", "--shutdown-share", "0.25", "--fail-at", "1.5"]
    process = simulate_process([*args, *failures, "--interval", "1", "--ramp", "0.3", "--duration", "4.5"])
    expected = {("active", 0): 20, ("disconnected", 3): 10, ("disconnected", 4): 10}
    seen: Counter[tuple[str, int]] = Counter()
    try:
        deadline = time.monotonic() + 8  # the 30 s grace keeps the others active after the run ends
        while time.monotonic() < deadline and seen != expected:
            time.sleep(0.1)
            seen = Counter(manager.statuses().values())
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert seen == expected, stderr
    summary = json.loads(stdout)
    assert process.returncode == 0, stderr
    assert summary["failed"] == {"silent": 10, "shutdown": 10}
    assert summary["errors"] == 0 and summary["acked"] == 40
    assert summary["requests_answered"] > 0  # the manager probed agents silent for 0.5 s: getstate answered


def test_two_processes_give_the_same_totals_as_one(
    manager: ManagerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    args = started_with_keys(manager, 60)
    timing = ["--interval", "0.5", "--ramp", "0.5", "--duration", "2.5"]
    code_one, one = simulate_here(capsys, [*args, *timing, "--processes", "1"])
    code_two, two = simulate_here(capsys, [*args, *timing, "--processes", "2"])
    assert (code_one, code_two) == (0, 0)
    for name in ("agents", "connected", "acked", "errors"):
        assert one[name] == two[name], name
    assert (one["processes"], two["processes"]) == (1, 2)
    sent_one, sent_two = one["keepalives_sent"], two["keepalives_sent"]
    assert isinstance(sent_one, int) and isinstance(sent_two, int)
    assert abs(sent_one - sent_two) <= 0.15 * sent_one
    assert two["keepalives_acked"] == sent_two


def test_cipher_mix_is_half_aes_half_blowfish_and_all_acked(
    manager: ManagerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    args = started_with_keys(manager, 20, "--cipher", "mix")
    code, summary = simulate_here(capsys, [*args, "--interval", "0.5", "--ramp", "0.2", "--duration", "1.5"])
    assert code == 0, summary
    assert summary["ciphers"] == {"aes": 10, "blowfish": 10}
    assert summary["acked"] == 20 and summary["errors"] == 0
    assert summary["keepalives_acked"] == summary["keepalives_sent"]


def test_udp_fleet_with_precomputed_keepalives(
    manager: ManagerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    manager.settings = ManagerSettings(protocols="udp", connection_grace=30)
    args = started_with_keys(manager, 10, "--protocol", "udp")
    code, summary = simulate_here(
        capsys, [*args, "--precompute", "--interval", "0.3", "--ramp", "0.2", "--duration", "1.5"]
    )
    assert code == 0, summary
    assert summary["acked"] == 10 and summary["errors"] == 0
    assert isinstance(summary["keepalives_acked"], int) and summary["keepalives_acked"] >= 30


def test_nobody_listening_means_never_connected_errors_and_exit_one(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    keys = tmp_path / "client.keys"
    port = ManagerProcess(tmp_path).port  # a free port nobody listens on
    args = ["simulate", "--manager", f"{LOOPBACK}:{port}", "--agents", "3", "--create-keys", str(keys)]
    code, summary = simulate_here(capsys, [*args, "--duration", "1", "--ramp", "0", "--progress", "never"])
    assert code == 1
    assert summary["connected"] == 0 and summary["error_kinds"] == {"never_connected": 3}
    assert isinstance(summary["retry_kinds"], dict) and summary["retry_kinds"].get("connect_refused", 0) >= 3


class ScriptedManager(asyncio.Protocol):
    """Acks startups; answers the first keep-alive with a getstate probe and `#!-force_reconnect`."""

    def __init__(self, key: AgentKey, seen: list[tuple[str, str]]) -> None:
        self.cipher = AgentCipher.for_key(key.id, key.name, key.key)
        self.seen = seen
        self.decoder = FrameDecoder()
        self.transport: asyncio.Transport | None = None
        self.sent = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def reply(self, payload: bytes) -> None:
        assert self.transport is not None
        self.sent += 1
        sealed = self.cipher.seal(
            payload, cipher=CipherKind.AES, rand=1, global_counter=0, local_counter=self.sent
        )
        self.transport.write(encode_frame(sealed))

    def data_received(self, data: bytes) -> None:
        for frame in self.decoder.feed(data):
            message = control.parse_from_agent(self.cipher.open(split_header(frame)).payload)
            if isinstance(message, control.Startup):
                self.seen.append(("startup", message.version or ""))
                self.reply(control.ACK)
            elif isinstance(message, control.Keepalive):
                self.seen.append(("keepalive", message.agent_ip or ""))
                if sum(kind == "startup" for kind, _ in self.seen) == 1:
                    self.reply(control.build_request("c0ffee", "agent", control.GETSTATE))
                    self.reply(control.FORCE_RECONNECT)
                else:
                    self.reply(control.ACK)
            elif isinstance(message, control.RequestReply):
                self.seen.append(("reply", f"{message.counter} {message.response}"))


def test_force_reconnect_starts_over_and_getstate_is_answered(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    keys = tmp_path / "client.keys"
    (key,) = create_keys(keys, 1)
    seen: list[tuple[str, str]] = []
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(loop.create_server(lambda: ScriptedManager(key, seen), LOOPBACK, 0))
    port = server.sockets[0].getsockname()[1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        args = ["simulate", "--manager", f"{LOOPBACK}:{port}", "--agents", "1", "--keys", str(keys)]
        code, summary = simulate_here(
            capsys, [*args, "--interval", "0.3", "--ramp", "0", "--duration", "1.2", "--progress", "never"]
        )
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        server.close()
        loop.close()
    assert code == 0, summary
    assert summary["forced_reconnects"] == 1 and summary["requests_answered"] == 1
    kinds = [kind for kind, _ in seen]
    assert kinds[:4] == ["startup", "keepalive", "reply", "startup"]
    assert seen[0] == ("startup", "v4.14.7")
    assert seen[1][1].startswith("127.0.")  # #"_agent_ip" is the socket's own address
    counter, _, response = seen[2][1].partition(" ")
    assert counter == "c0ffee"
    state = json.loads(response)
    assert state["error"] == 0 and state["data"]["status"] == "connected"
    assert kinds.count("keepalive") >= 3  # kept alive on the new connection


def test_batched_reads_still_ack_every_keepalive_within_a_tick_of_latency(
    manager: ManagerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    args = started_with_keys(manager, 30, "--batch-reads")
    code, summary = simulate_here(capsys, [*args, "--interval", "0.5", "--ramp", "0.3", "--duration", "3"])
    assert code == 0, summary
    assert summary["batch_reads"] is True
    assert summary["acked"] == 30 and summary["errors"] == 0
    assert isinstance(summary["keepalives_acked"], int) and summary["keepalives_acked"] >= 120
    assert summary["keepalives_acked"] == summary["keepalives_sent"]
    latency = summary["ack_latency_ms"]
    # Replies wait for the next tick (10 ms) to be read: never much less than nothing, never far more.
    assert isinstance(latency, dict) and 0 < latency["p50"] <= latency["p99"] < 500
