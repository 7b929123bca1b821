"""Protocol parsing per message: nats-py's parser against the RawClient's (infra/wire_parser.py).

Feeds both the same reads: 60 JetStream deliveries of a `succeeded` event with its headers, as the
projector's log feed receives them, in reads of up to 32 KB. nats-py's parser hands each message
to the client's `_process_msg` (here a no-op coroutine); the RawClient's calls the raw
subscription's handler (here a no-op function). Prints microseconds per message, best of 5.

    .venv/bin/python -m bench.wire_parse [--rounds 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from nats.protocol.parser import Parser

from bench.common import emit, load_average
from ordo.infra.raw_client import RawClient

_SID = 5
_MESSAGES = 60


class _Sink:
    async def _process_msg(self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes) -> None:
        return None


def _delivery(i: int) -> bytes:
    subject = b"ordo.evt.w1abc.default.n.0193d6f2a1b27c3e8f4a5b6c7d8e9f0a.succeeded"
    reply = b"$JS.ACK.ORDO_EVENTS.feed.1.%d.%d.1733400000000000000.0" % (i, i)
    headers = b"NATS/1.0\r\nOrdo-Event-Id: 4f2a9c8e7d6b5a4f3e2d1c0b9a8f7e6d\r\nOrdo-Schema: 1\r\n\r\n"
    data = b'{"attempt":1,"worker_id":"w-1","result":null,"duration_ms":0.12}'
    size = len(headers) + len(data)
    return b"HMSG %s %d %s %d %d\r\n%s%s\r\n" % (subject, _SID, reply, len(headers), size, headers, data)


async def _per_message(parser: Parser, reads: list[bytes], rounds: int) -> float:
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(rounds):
            for read in reads:
                await parser.parse(read)
        best = min(best, time.perf_counter() - t0)
    return best / (rounds * _MESSAGES) * 1e6


async def run(rounds: int) -> dict[str, float]:
    stream = b"".join(_delivery(i) for i in range(_MESSAGES))
    reads = [stream[i : i + 32768] for i in range(0, len(stream), 32768)]
    client = RawClient()
    client._raw_handlers[_SID] = lambda subject, reply, data, headers: None
    return {
        "nats_py_us_per_msg": round(await _per_message(Parser(_Sink()), reads, rounds), 2),
        "wire_parser_us_per_msg": round(await _per_message(client._ps, reads, rounds), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    start = load_average()
    result = asyncio.run(run(args.rounds))
    emit({"bench": "wire_parse", **result, "loadavg_start": start, "loadavg_end": load_average()})


if __name__ == "__main__":
    main()
