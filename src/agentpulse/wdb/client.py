"""`WdbClient`: the blocking query-socket client of the CLIs and tests, one request at a time, like Wazuh's
framework `WazuhDBConnection`.

It trusts the manager it talks to (a length header is read as given); `WdbUnavailable` says that no
manager answers, so a CLI can fall back or say so. A full listen backlog (EAGAIN, a flood of connections
the manager is still accepting) is waited out within the timeout, not reported as an error.
"""

from __future__ import annotations

import errno
import json
import socket
import time
from pathlib import Path
from typing import Any

from agentpulse.wdb.protocol import WdbError, unix_address
from agentpulse.wire.frames import LENGTH_SIZE, decode_length, encode_frame

MAX_PAGES = 1_000_000
CONNECT_RETRY = 0.02  # seconds between attempts while the socket's listen backlog is full


class WdbUnavailable(OSError):
    """No manager answers on the socket."""


class WdbClient:
    """A blocking client, one request at a time."""

    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        self.path = path
        deadline = time.monotonic() + timeout
        while True:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            try:
                with unix_address(path) as address:
                    self.sock.connect(address)
                return
            except BlockingIOError:
                # EAGAIN: the backlog is full (a flood the manager is accepting and closing); wait our turn.
                self.sock.close()
                if time.monotonic() >= deadline:
                    raise
                time.sleep(CONNECT_RETRY)
            except OSError as error:
                self.sock.close()
                if error.errno in (errno.ENOENT, errno.ECONNREFUSED):
                    raise WdbUnavailable(error.errno, f"no manager answers on {path}") from None
                raise

    def __enter__(self) -> WdbClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def receive(self) -> bytes:
        return self._exactly(decode_length(self._exactly(LENGTH_SIZE)))

    def _exactly(self, count: int) -> bytes:
        chunks = []
        while count:
            chunk = self.sock.recv(count)
            if not chunk:
                raise ConnectionError("the manager closed the query socket")
            chunks.append(chunk)
            count -= len(chunk)
        return b"".join(chunks)

    def query(self, text: str) -> str:
        self.sock.sendall(encode_frame(text.encode()))
        return self.receive().decode("utf-8", "replace")

    def query_json(self, text: str) -> Any:
        """The payload of an `ok` answer, decoded; WdbError for anything else."""
        status, _, payload = self.query(text).partition(" ")
        if status != "ok":
            raise WdbError(payload or status)
        return json.loads(payload) if payload else None

    def query_pages(self, template: str, start: int = 0, key: str = "id") -> list[Any]:
        """Every row of a paged command: `template` has a `{last}` for the last id seen."""
        rows: list[Any] = []
        last = start
        for _ in range(MAX_PAGES):  # bounded: a page always advances `last`, or ends the loop
            status, _, payload = self.query(template.format(last=last)).partition(" ")
            if status not in ("ok", "due"):
                raise WdbError(payload or status)
            batch = json.loads(payload)
            rows.extend(batch)
            if status == "ok" or not batch:
                return rows
            tail = batch[-1]
            last = tail[key] if isinstance(tail, dict) else tail
        raise WdbError("too many pages")
