"""Helpers shared by the translators' golden tables: the case files, client SSE bytes as comparable lists,
usage as a dict."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson

from sluicegate.config.runtime import Endpoint
from sluicegate.core.usage import Usage

GOLDEN = Path(__file__).resolve().parent / "golden"
REGOLDEN = os.environ.get("SLUICEGATE_REGOLDEN") == "1"  # rewrite the expected files instead of comparing
ENDPOINTS = (Endpoint("127.0.0.1", 1, False),)


def cases(pairs: Iterable[str]) -> list[tuple[str, str]]:
    """(pair, case) for every case folder under tests/golden/<pair>/."""
    return [(pair, p.name) for pair in pairs for p in sorted((GOLDEN / pair).iterdir()) if p.is_dir()]


def load(pair: str, case: str, name: str) -> Any:
    """One JSON file of a case."""
    return orjson.loads((GOLDEN / pair / case / f"{name}.json").read_bytes())


def save(pair: str, case: str, name: str, value: Any) -> None:
    """Rewrite one JSON file of a case (SLUICEGATE_REGOLDEN=1)."""
    path = GOLDEN / pair / case / f"{name}.json"
    path.write_bytes(orjson.dumps(value, option=orjson.OPT_INDENT_2) + b"\n")


def without_created(value: Any) -> Any:
    """The value without any `created` timestamp (it changes every run)."""
    if isinstance(value, dict):
        return {k: without_created(v) for k, v in value.items() if k != "created"}
    if isinstance(value, list):
        return [without_created(v) for v in value]
    return value


def parse_stream(
    data: bytes, anthropic: bool, normalize: Callable[[Any], Any] = without_created
) -> list[Any]:
    """Client SSE bytes as a list: parsed data payloads, "[DONE]", or {"comment": ...}."""
    events: list[Any] = []
    assert data.endswith(b"\n\n") or not data
    for block in data.split(b"\n\n")[:-1]:
        lines = block.split(b"\n")
        if lines[0].startswith(b":"):
            events.append({"comment": lines[0][1:].strip().decode()})
            continue
        payload = b"".join(line[6:] for line in lines if line.startswith(b"data: "))
        if payload == b"[DONE]":
            events.append("[DONE]")
            continue
        event = orjson.loads(payload)
        if anthropic:
            assert lines[0] == b"event: " + event["type"].encode()
        events.append(normalize(event))
    return events


def usage_dict(usage: Usage | None) -> dict[str, int] | None:
    """Every Usage field by name, or None."""
    return None if usage is None else {name: getattr(usage, name) for name in Usage.__slots__}
