"""RawClient writes a request's message exactly as nats-py would, and parses header blocks the same."""

from __future__ import annotations

import pytest
from nats.aio.client import Client as NATS

from ordo.infra import subjects as sj
from ordo.infra.raw_client import RawClient

_HEADERS = [
    {"Ordo-Event-Id": "0f" * 16, "Ordo-Schema-Version": "1"},
    {
        sj.EXPECTED_LAST_SUBJECT_SEQ: "42",
        sj.EXPECTED_LAST_SUBJECT_SEQ_SUBJECT: "ordo.evt.t1.*.*.abc.*",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "Ordo-Correlation-Id": "  padded value  ",
        "Ordo-Note": "é ü 日本",
    },
]


async def _nats_py_command(subject: str, reply: str, payload: bytes, headers: dict[str, str]) -> bytes:
    client = NATS()  # not connected: the command stays in its pending buffer
    await client._send_publish(subject, reply, payload, len(payload), headers)
    command: bytes = client._pending[0]
    return command


@pytest.mark.parametrize("headers", _HEADERS)
async def test_a_request_is_the_command_nats_py_would_send(headers: dict[str, str]) -> None:
    subject, reply, payload = "ordo.evt.t1.default.b1.abc.submitted", "_INBOX.x.7", b'{"event":"x"}'
    ours = RawClient()._hpub(subject, reply, payload, headers)
    assert ours == await _nats_py_command(subject, reply, payload, headers)


@pytest.mark.parametrize(
    ("subject", "headers"),
    [
        ("ordo.a", {"Bad Name": "x"}),  # an invalid header name: nats-py raises its error
        ("ordo.a", {"Ordo-Note": "two\r\nlines"}),  # nats-py turns line breaks into spaces
        ("ordo a", {"Ordo-Note": "x"}),  # a subject nats-py rejects
    ],
)
def test_anything_unusual_is_left_to_nats_py(subject: str, headers: dict[str, str]) -> None:
    assert RawClient()._hpub(subject, "_INBOX.x.1", b"{}", headers) is None


def test_header_blocks_parse_as_nats_py_parses_them() -> None:
    raw = (
        b"Ordo-Event-Id: abc\r\nNats-Expected-Last-Subject-Sequence: 12\r\nBad Name: x\r\n"
        b"X:\tv \r\nk: \xff\xfe\r\nno-colon\r\nsep\x1cname: y\r\n\r\n"
    )
    assert RawClient._parse_header_lines(raw) == NATS._parse_header_lines(raw)
    assert RawClient._parse_header_lines(raw)["X"] == "v"
