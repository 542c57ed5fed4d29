"""A moderation backend: any AIServiceBackend that speaks OpenAI's /v1/moderations, over our own pools."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import orjson

from sluicegate.auth import credential_provider
from sluicegate.config.runtime import Backend
from sluicegate.core.errors import GatewayError
from sluicegate.guardrails.engine import GuardRule, act, count
from sluicegate.translate.base import UpstreamRequest
from sluicegate.upstream.connection import UpstreamError
from sluicegate.upstream.pool import Pools

log = logging.getLogger("sluicegate.guardrails")
DEFAULT_MODEL = "omni-moderation-latest"
TIMEOUT = 5.0  # seconds for one moderation call


@dataclass(frozen=True, slots=True)
class ModerationCheck:
    """Compiled detectors.moderation of one rule."""

    backend: Backend
    model: str
    categories: tuple[str, ...]  # empty: every category the backend reports
    threshold: float
    fail_open: bool


def flagged(result: dict[str, Any], check: ModerationCheck) -> str | None:
    """The first selected category whose score reaches the threshold, else None."""
    scores = result.get("category_scores") or {}
    names = check.categories or tuple(scores)
    for name in names:
        score = scores.get(name)
        if isinstance(score, int | float) and score >= check.threshold:
            return name
    return None


class ModerationClient:
    """Calls moderation backends with the gateway's credentials and connection pools."""

    def __init__(self, pools: Pools) -> None:
        self.pools = pools
        self.providers: dict[str, Any] = {}

    async def check(self, rule: GuardRule, texts: list[str], side: str) -> None:
        """Raise GuardrailBlocked (Block) or count (Log) when the backend flags the texts."""
        check: ModerationCheck = rule.moderation
        texts = [t for t in texts if t]
        if not texts:
            return
        try:
            results = await asyncio.wait_for(self._call(check, texts), TIMEOUT)
        except (UpstreamError, TimeoutError, ValueError, OSError) as exc:
            count(rule, "ModerationUnavailable", side)
            log.warning("guardrail %s: moderation backend %s failed: %s", rule.name, check.backend.name, exc)
            if check.fail_open:
                return
            raise GatewayError(
                503,
                f"Guardrail rule {rule.name} could not reach its moderation backend.",
                code="guardrail_unavailable",
            ) from None
        for result in results:
            category = flagged(result, check) if isinstance(result, dict) else None
            if category is not None:
                act(rule, "", [(0, 0, f"Moderation:{category}", "")], side)
                return

    async def _call(self, check: ModerationCheck, texts: list[str]) -> list[Any]:
        backend = check.backend
        prefix = (backend.schema.prefix or "v1").strip("/")
        body = orjson.dumps({"model": check.model, "input": texts})
        upstream = UpstreamRequest(
            "POST", f"/{prefix}/moderations", [("content-type", "application/json")], body
        )
        pool = self.pools.get(backend.endpoints[0])
        if backend.credential is not None:
            provider = self.providers.get(backend.name)
            if provider is None:
                provider = self.providers[backend.name] = credential_provider(backend.credential)
            await provider.apply(upstream, pool.authority.decode())
        connection = await pool.acquire(TIMEOUT)
        try:
            connection.send(upstream.method, upstream.target, upstream.headers, upstream.body)
            status, _ = await connection.read_head()
            raw = await connection.read_body()
        except BaseException:
            connection.close()
            raise
        pool.release(connection)
        if status != 200:
            raise ValueError(f"status {status}")
        answer = orjson.loads(raw)
        results = answer.get("results") if isinstance(answer, dict) else None
        if not isinstance(results, list):
            raise ValueError("no results in the answer")
        return results
