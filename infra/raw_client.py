"""A nats-py client that can hand a subscription's messages over unparsed.

nats-py turns every message into a `Msg`: it parses the header block into a dict, decodes subject and
reply, and queues the message for a task that calls the callback. For the projector, which reads the
whole log in order, that was about a third of its CPU per event (docs/benchmarks.md). A subscription
registered with `raw()` skips all of it: its handler is called, in the client's read loop, with the
subject, reply, payload and header block as the protocol delivered them. The handler must not block
(it only queues); everything else (reconnects, other subscriptions, requests) is nats-py's own.

The override is of one private method of nats-py (`_process_msg`), so the version is pinned in
pyproject.toml and `tests/test_log_feed.py` checks that a raw subscription receives its messages.
"""

from __future__ import annotations

from collections.abc import Callable

from nats.aio.client import Client as NATS
from nats.aio.subscription import Subscription

# (subject, reply, data, header block or b"") -> None
RawHandler = Callable[[bytes, bytes, bytes, bytes], None]


class RawClient(NATS):
    """nats-py's client, plus subscriptions whose messages skip nats-py's per-message work."""

    def __init__(self) -> None:
        super().__init__()
        self._raw_handlers: dict[int, RawHandler] = {}

    async def raw(self, subject: str, handler: RawHandler) -> Subscription:
        """Subscribe to `subject`; `handler` gets each message unparsed. Unsubscribe as usual."""
        sub = await self.subscribe(subject)
        self._raw_handlers[sub._id] = handler
        return sub

    def drop_raw(self, sub: Subscription) -> None:
        """Stop handing `sub`'s messages over (before unsubscribing it)."""
        self._raw_handlers.pop(sub._id, None)

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes
    ) -> None:
        handler = self._raw_handlers.get(sid)
        if handler is None:
            await super()._process_msg(sid, subject, reply, data, headers)
            return
        handler(subject, reply, data, headers or b"")
