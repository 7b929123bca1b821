"""A nats-py client that can hand a subscription's messages over unparsed.

nats-py turns every message into a `Msg`: it parses the header block into a dict, decodes subject and
reply, and queues the message for a task that calls the callback. For the projector, which reads the
whole log in order, that was about a third of its CPU per event (docs/benchmarks.md). A subscription
registered with `raw()` skips all of it: its handler is called, in the client's read loop, with the
subject, reply, payload and header block as the protocol delivered them. The handler must not block
(it only queues); everything else (reconnects, other subscriptions) is nats-py's own.
`request_data()` is a request on such a subscription, for replies of which only the payload counts
(the event store's appends: a PubAck).

The override is of one private method of nats-py (`_process_msg`), so the version is pinned in
pyproject.toml and `tests/test_log_feed.py` checks that a raw subscription receives its messages.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.subscription import Subscription

# (subject, reply, data, header block or b"") -> None
RawHandler = Callable[[bytes, bytes, bytes, bytes], None]


class RawClient(NATS):
    """nats-py's client, plus subscriptions whose messages skip nats-py's per-message work."""

    def __init__(self) -> None:
        super().__init__()
        self._raw_handlers: dict[int, RawHandler] = {}
        self._replies: dict[bytes, asyncio.Future[bytes]] = {}
        self._reply_prefix = b""
        self._tokens = itertools.count(1)
        self._reply_lock = asyncio.Lock()

    async def request_data(
        self, subject: str, payload: bytes, headers: dict[str, str] | None = None, timeout: float = 2.0
    ) -> bytes:
        """`request()` for a reply whose payload is all the caller reads (a PubAck): no `Msg`, no
        header dict, no task per wait. Raises nats-py's NoRespondersError and TimeoutError."""
        if not self._reply_prefix:
            await self._reply_inbox()
        token = str(next(self._tokens)).encode()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes] = loop.create_future()
        self._replies[token] = future
        expire = loop.call_later(timeout, self._expire, token)
        try:
            await self.publish(subject, payload, reply=(self._reply_prefix + token).decode(), headers=headers)
            return await future
        finally:
            expire.cancel()
            self._replies.pop(token, None)

    async def _reply_inbox(self) -> None:
        async with self._reply_lock:
            if not self._reply_prefix:
                prefix = self.new_inbox() + "."
                await self.raw(prefix + "*", self._on_reply)
                self._reply_prefix = prefix.encode()

    def _on_reply(self, subject: bytes, reply: bytes, data: bytes, headers: bytes) -> None:
        future = self._replies.get(subject[len(self._reply_prefix) :])
        if future is None or future.done():
            return
        if headers.startswith(b"NATS/1.0 503"):
            future.set_exception(nats.errors.NoRespondersError())
        else:
            future.set_result(data)

    def _expire(self, token: bytes) -> None:
        future = self._replies.get(token)
        if future is not None and not future.done():
            future.set_exception(nats.errors.TimeoutError())

    async def raw(self, subject: str, handler: RawHandler) -> Subscription:
        """Subscribe to `subject`; `handler` gets each message unparsed. Unsubscribe as usual."""
        sub = await self.subscribe(subject)
        self._raw_handlers[sub._id] = handler
        return sub

    def drop_raw(self, sub: Subscription) -> None:
        """Stop handing `sub`'s messages over (before unsubscribing it)."""
        self._raw_handlers.pop(sub._id, None)

    async def _process_msg(self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes) -> None:
        handler = self._raw_handlers.get(sid)
        if handler is None:
            await super()._process_msg(sid, subject, reply, data, headers)
            return
        handler(subject, reply, data, headers or b"")
