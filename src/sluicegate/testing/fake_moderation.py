"""OpenAI's /v1/moderations for the fake provider: deterministic flags from words in the input.

Text containing "attack" is flagged for violence (score 0.93), "hate" for harassment (0.88); every other
category scores 0.001. Knobs: x-fake-status (an OpenAI error), x-fake-delay-ms.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from sluicegate.testing.dialects import Dialect
from sluicegate.testing.knobs import Knobs

if TYPE_CHECKING:
    from sluicegate.testing.fake_provider import FakeProvider

CATEGORIES = ("harassment", "hate", "self-harm", "sexual", "violence", "illicit")
TRIGGERS = {"attack": ("violence", 0.93), "hate": ("harassment", 0.88)}


def result(text: str) -> dict[str, Any]:
    """One moderation result for one input text."""
    scores = dict.fromkeys(CATEGORIES, 0.001)
    lower = text.lower()
    for word, (category, score) in TRIGGERS.items():
        if word in lower:
            scores[category] = score
    flags = {name: score >= 0.5 for name, score in scores.items()}
    return {"flagged": any(flags.values()), "categories": flags, "category_scores": scores}


def matches(method: str, path: str) -> bool:
    """POST .../moderations."""
    return method == "POST" and path.endswith("/moderations")


async def handle(provider: FakeProvider, request: web.BaseRequest, body: bytes, knobs: Knobs) -> web.Response:
    """Answer a moderation request."""
    if knobs.delay_ms:
        await asyncio.sleep(knobs.delay_ms / 1000)
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _error(400, "The body is not JSON.")
    raw = data.get("input") if isinstance(data, dict) else None
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        return _error(400, "input must be a string or a list of strings.")
    answer = {
        "id": f"modr-{uuid.uuid4().hex[:12]}",
        "model": data.get("model") or "omni-moderation-latest",
        "results": [result(t) for t in texts],
    }
    return web.Response(body=orjson.dumps(answer), content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def status_error(knobs: Knobs) -> web.Response:
    """The answer to x-fake-status: OpenAI's error envelope."""
    return _error(knobs.status or 500, "fake moderation error")


DIALECT = Dialect("moderation", matches, handle, status_error)
