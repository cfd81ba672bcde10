"""The standalone /metrics listener over a real loopback socket."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from agentpulse.config.metrics import MetricsConfig
from agentpulse.metrics import listener
from agentpulse.metrics.listener import MetricsListener

BODY = b"# HELP x x\n# TYPE x gauge\nx 1\n"


def render() -> tuple[bytes, str]:
    return BODY, "text/plain; version=0.0.4; charset=utf-8"


async def exchange(port: int, request: bytes, timeout: float = 5.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


def serving(test: Callable[[int], Awaitable[None]], render: listener.Render = render) -> None:
    async def run() -> None:
        service = MetricsListener(MetricsConfig(enabled=True, host="127.0.0.1", port=0), render)
        await service.start()
        try:
            await test(service.port)
        finally:
            await service.stop()

    asyncio.run(run())


def test_get_metrics_answers_the_body_with_its_content_type_and_length() -> None:
    async def test(port: int) -> None:
        reply = await exchange(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n")
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.split(b"\r\n")[0] == b"HTTP/1.1 200 OK"
        assert b"Content-Type: text/plain; version=0.0.4; charset=utf-8" in head
        assert f"Content-Length: {len(BODY)}".encode() in head
        assert body == BODY

    serving(test)


def test_head_answers_the_headers_only() -> None:
    async def test(port: int) -> None:
        reply = await exchange(port, b"HEAD /metrics HTTP/1.0\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 200 OK")
        assert reply.endswith(b"\r\n\r\n")

    serving(test)


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", b"404"),
        (b"GET /metricsx HTTP/1.1\r\n\r\n", b"404"),
        (b"POST /metrics HTTP/1.1\r\n\r\n", b"405"),
        (b"hello\r\n\r\n", b"400"),
    ],
)
def test_anything_else_gets_an_error_status(request_bytes: bytes, status: bytes) -> None:
    async def test(port: int) -> None:
        reply = await exchange(port, request_bytes)
        assert reply.split(b" ")[1] == status

    serving(test)


def test_a_query_string_is_ignored() -> None:
    async def test(port: int) -> None:
        assert (await exchange(port, b"GET /metrics?x=1 HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 200")

    serving(test)


def test_an_oversized_head_is_closed_without_an_answer() -> None:
    async def test(port: int) -> None:
        reply = await exchange(port, b"GET /metrics HTTP/1.1\r\nX: " + b"a" * (listener.HEAD_MAX * 2))
        assert reply == b""

    serving(test)


def test_a_silent_client_is_closed_after_the_request_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(listener, "REQUEST_TIMEOUT", 0.2)

    async def test(port: int) -> None:
        assert await exchange(port, b"GET /metr", timeout=3.0) == b""

    serving(test)


def test_a_failing_render_is_a_500_and_the_listener_goes_on() -> None:
    calls = []

    def broken() -> tuple[bytes, str]:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return render()

    async def test(port: int) -> None:
        assert (await exchange(port, b"GET /metrics HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 500")
        assert (await exchange(port, b"GET /metrics HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 200")

    serving(test, broken)


def test_a_port_in_use_is_an_error_naming_the_address() -> None:
    async def run() -> None:
        first = MetricsListener(MetricsConfig(True, "127.0.0.1", 0), render)
        await first.start()
        try:
            second = MetricsListener(MetricsConfig(True, "127.0.0.1", first.port), render)
            with pytest.raises(OSError, match=f"127.0.0.1:{first.port} for metrics"):
                await second.start()
        finally:
            await first.stop()

    asyncio.run(run())
