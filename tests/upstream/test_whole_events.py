"""The relay cuts a stream only after a whole event: LF and CRLF streams, any piece."""

from __future__ import annotations

import pytest

from sluicegate.upstream.forward import _whole_events


@pytest.mark.parametrize(
    ("data", "whole", "rest"),
    [
        (b"data: {partial", b"", b"data: {partial"),
        (b"da", b"", b"da"),
        (b"", b"", b""),
        (b"data: 1\n\n", b"data: 1\n\n", b""),
        (b"data: 1\n\ndata: 2", b"data: 1\n\n", b"data: 2"),
        (b"data: 1\r\n\r\ndata: 2", b"data: 1\r\n\r\n", b"data: 2"),
        (b"data: 1\n\ndata: 2\r\n\r\nda", b"data: 1\n\ndata: 2\r\n\r\n", b"da"),
        (b"\n\nx", b"\n\n", b"x"),
        (b"x\n\ny", b"x\n\n", b"y"),
        (b"xy\n\nz", b"xy\n\n", b"z"),
        (b"\r\n\r\nx", b"\r\n\r\n", b"x"),
        (b"data: 1\r\n", b"", b"data: 1\r\n"),
    ],
)
def test_whole_events_split_after_the_last_blank_line(data: bytes, whole: bytes, rest: bytes) -> None:
    assert _whole_events(data) == (whole, rest)
