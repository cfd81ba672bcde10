"""`PubAcks`: JetStream publishes whose acknowledgements come back on a subscription of our own, pipelined.

Not nats-py's `publish_async`: in nats-py 2.16 an error PubAck (a refused expectation, a message too large,
a sealed stream) raises inside its reply handler, so the future is never resolved (nats.py issue 985): a
refusal looked like a missing acknowledgement, `ACK_TIMEOUT` later, and could not be told from a lost one.
The relay must tell "wrong last sequence" (read the subject back) from the rest, at once. This is the
same protocol (a publish with a reply subject, the stream's PubAck or error on it) with the error kept.
"""

from __future__ import annotations

import asyncio
import itertools
import json

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js.api import PubAck
from nats.js.errors import APIError, NoStreamResponseError

NO_RESPONDERS = "503"  # the status header of the server's answer when no stream takes the subject


class PubAcks:
    """One reply subscription per client, made at the first publish (nats-py renews it on a reconnect)."""

    def __init__(self, nc: NATS) -> None:
        self.nc = nc
        self._prefix: str | None = None
        self._tokens = itertools.count(1)
        self._waiting: dict[str, asyncio.Future[PubAck]] = {}

    async def publish(
        self, subject: str, payload: bytes, headers: dict[str, str] | None
    ) -> asyncio.Future[PubAck]:
        """Send the message; the future gets its PubAck, or the stream's error as an `APIError`. A future
        the caller cancels (it stopped waiting) is forgotten, so a late answer goes nowhere."""
        if self._prefix is None:
            prefix = f"{self.nc.new_inbox()}."
            await self.nc.subscribe(f"{prefix}*", cb=self._on_reply)
            self._prefix = prefix
        token = str(next(self._tokens))
        future: asyncio.Future[PubAck] = asyncio.get_running_loop().create_future()
        self._waiting[token] = future
        future.add_done_callback(lambda _: self._waiting.pop(token, None))
        try:
            await self.nc.publish(subject, payload, reply=self._prefix + token, headers=headers)
        except BaseException:
            future.cancel()
            raise
        return future

    async def _on_reply(self, msg: Msg) -> None:
        future = self._waiting.get(msg.subject.rpartition(".")[2])
        if future is None or future.done():
            return
        if msg.headers and msg.headers.get("Status") == NO_RESPONDERS:
            future.set_exception(NoStreamResponseError())
            return
        try:
            answer = json.loads(msg.data)
            error = answer.get("error")
            if error:
                future.set_exception(
                    APIError(
                        code=error.get("code"),
                        err_code=error.get("err_code"),
                        description=error.get("description"),
                    )
                )
            else:
                future.set_result(PubAck.from_response(answer))
        except (ValueError, TypeError, AttributeError) as broken:
            future.set_exception(NatsError(f"unreadable JetStream acknowledgement: {broken!r}"))
