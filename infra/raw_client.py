"""A nats-py client that can hand a subscription's messages over unparsed.

nats-py turns every message into a `Msg`: it parses the header block into a dict, decodes subject and
reply, and queues the message for a task that calls the callback. For the projector, which reads the
whole log in order, that was about a third of its CPU per event (docs/benchmarks.md). A subscription
registered with `raw()` skips all of it: its handler is called, in the client's read loop, with the
subject, reply, payload and header block as the protocol delivered them. The handler must not block
(it only queues); everything else (reconnects, other subscriptions) is nats-py's own.
`request_data()` is a request on such a subscription, for replies of which only the payload counts
(the event store's appends: a PubAck). Its message is written as nats-py would write it, without
nats-py's per-header work: a header block of names already checked once and values without line
breaks is joined in one step (anything else goes through nats-py's `publish`). Received header
blocks are parsed as nats-py does, checking names for whitespace in one call instead of per
character (both were among the worker's largest costs per task).

The override is of one private method of nats-py (`_process_msg`) and of its protocol parser
(infra/wire_parser.py, which calls a raw handler itself), so the version is pinned in pyproject.toml;
`tests/test_log_feed.py` and `tests/test_wire_parser.py` check that both still read what nats-py reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
from collections.abc import Callable

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from ordo.infra.wire_parser import WireParser

# nats-py's header name rule (nats/aio/client.py `_HEADER_KEY_RE`), and what it strips from values.
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_WHITESPACE = re.compile(r"\s")

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
        self._header_names: set[str] = set()  # names already found valid
        self._ps = WireParser(self)
        # The server's last "permissions violation" notice (asynchronous: a refused request only
        # times out), so that a caller retrying on timeouts can tell a refusal from a busy server.
        self.refused: str | None = None

    async def request_data(
        self, subject: str, payload: bytes, headers: dict[str, str] | None = None, timeout: float = 2.0
    ) -> bytes:
        """`request()` for a reply whose payload is all the caller reads (a PubAck): no `Msg`, no
        header dict, no task per wait. Raises nats-py's NoRespondersError and TimeoutError."""
        if not self._reply_prefix:
            await self._reply_inbox()
        token, reply, future = self._expect_reply()
        expire = asyncio.get_running_loop().call_later(timeout, self._expire, token)
        try:
            await self.publish_fast(subject, payload, headers, reply=reply)
            return await future
        finally:
            expire.cancel()
            self._replies.pop(token, None)

    async def request_many(
        self, msgs: list[tuple[str, bytes, dict[str, str]]], timeout: float = 2.0
    ) -> list[bytes | nats.errors.Error]:
        """`request_data` for many messages at once: all are written (pipelined on the connection),
        then their replies are awaited together, one deadline for all: no task and no timer per
        message. Each message's reply payload, or the error its request met (nats-py's
        NoRespondersError or TimeoutError). A failed write raises, as `publish` does."""
        if not self._reply_prefix:
            await self._reply_inbox()
        futures: list[asyncio.Future[bytes]] = []
        tokens: list[bytes] = []
        try:
            for subject, payload, headers in msgs:
                token, reply, future = self._expect_reply()
                tokens.append(token)
                futures.append(future)
                await self.publish_fast(subject, payload, headers, reply=reply)
            if futures:
                await asyncio.wait(futures, timeout=timeout)
            out: list[bytes | nats.errors.Error] = []
            for future in futures:
                if not future.done():
                    out.append(nats.errors.TimeoutError())
                elif isinstance(error := future.exception(), nats.errors.Error):
                    out.append(error)  # no responders (_on_reply sets no other error)
                else:
                    out.append(future.result())
            return out
        finally:
            for token, future in zip(tokens, futures, strict=True):
                self._replies.pop(token, None)
                if not future.done():
                    future.cancel()

    def _expect_reply(self) -> tuple[bytes, str, asyncio.Future[bytes]]:
        """A new request's token, its reply subject and the future its reply resolves (registered;
        the caller removes it from `_replies`). The reply inbox must be subscribed."""
        token = str(next(self._tokens)).encode()
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._replies[token] = future
        return token, (self._reply_prefix + token).decode(), future

    async def publish_fast(
        self, subject: str, payload: bytes, headers: dict[str, str] | None = None, reply: str = ""
    ) -> None:
        """`publish()`, with the header block joined in one step when it can be (see the module)."""
        cmd = self._hpub(subject, reply, payload, headers) if headers else None
        if cmd is None or not self._may_send(len(payload)):
            await self.publish(subject, payload, reply=reply, headers=headers)
            return
        self.stats["out_msgs"] += 1
        self.stats["out_bytes"] += len(payload)
        await self._send_command(cmd)
        if self._flush_queue is not None and self._flush_queue.empty():
            await self._flush_pending()

    def _hpub(self, subject: str, reply: str, payload: bytes, headers: dict[str, str]) -> bytes | None:
        """The HPUB command nats-py's `publish` would send; None when nats-py should build it
        (a header name not seen yet and not valid, a value with a line break, an odd subject)."""
        lines = []
        names = self._header_names
        for name, value in headers.items():
            if name not in names:
                if name != name.strip() or not _HEADER_NAME.fullmatch(name):
                    return None
                names.add(name)
            if "\r" in value or "\n" in value:
                return None
            lines.append(f"{name}: {value.strip()}\r\n")
        if not subject or _WHITESPACE.search(subject) or _WHITESPACE.search(reply):
            return None
        block = ("NATS/1.0\r\n" + "".join(lines) + "\r\n").encode()
        target = f"{subject} {reply}" if reply else subject
        head = f"HPUB {target} {len(block)} {len(block) + len(payload)}\r\n".encode()
        return head + block + payload + b"\r\n"

    def _may_send(self, size: int) -> bool:
        """nats-py's `publish` checks: True when the fast path may send (else `publish` raises
        the error it raises, or buffers while reconnecting)."""
        if self.is_closed or self.is_draining_pubs or not self.is_connected:
            return False
        return size <= self._max_payload

    @staticmethod
    def _parse_header_lines(raw: bytes) -> dict[str, str]:
        """nats-py's parser of a header block (same result), the name check in one regex call."""
        out: dict[str, str] = {}
        for line in raw.split(b"\r\n"):
            if not line:
                continue
            name, sep, value = line.partition(b":")
            if not sep:
                continue
            try:
                key = name.strip().decode("ascii")
            except UnicodeDecodeError:
                continue
            if _WHITESPACE.search(key):
                continue
            out[key] = value.strip().decode("utf-8", "replace")
        return out

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

    async def raw(self, subject: str, handler: RawHandler, queue: str = "") -> Subscription:
        """Subscribe to `subject` (in queue group `queue`, if given); `handler` gets each message
        unparsed. Unsubscribe as usual."""
        sub = await self.subscribe(subject, queue=queue)
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


async def subscribe_payloads(nc: NATS, subject: str, on_data: Callable[[bytes], None]) -> Subscription:
    """Subscribe to `subject`, handing `on_data` each message's payload: unparsed on a `RawClient`,
    through nats-py's callback otherwise. `on_data` must not block. Undo with `unsubscribe`."""
    if isinstance(nc, RawClient):
        return await nc.raw(subject, lambda _subject, _reply, data, _headers: on_data(data))

    async def handle(msg: Msg) -> None:
        on_data(msg.data)

    return await nc.subscribe(subject, cb=handle)


async def unsubscribe(nc: NATS, sub: Subscription) -> None:
    """End a `subscribe_payloads` subscription (best effort: a closed connection has ended it)."""
    with contextlib.suppress(Exception):
        if isinstance(nc, RawClient):
            nc.drop_raw(sub)
        await sub.unsubscribe()
