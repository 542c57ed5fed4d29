"""What every translator takes and gives (DESIGN.md §3)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from sluicegate.config.runtime import BackendRef
from sluicegate.core.context import RequestContext
from sluicegate.core.errors import GatewayError
from sluicegate.core.usage import Usage


@dataclass(slots=True)
class UpstreamRequest:
    """The request a translator builds for one attempt; auth and header mutation come after."""

    method: str
    target: str  # path and query
    headers: list[tuple[str, str]]  # lower-case names
    body: bytes
    client_headers: dict[str, str] | None = None  # the client's headers, for credentialOverride


class Translator(Protocol):
    """One (client API x backend schema) pair; created per attempt, may keep stream state."""

    def request(self, ctx: RequestContext) -> UpstreamRequest:
        """Build the upstream request."""

    def response_headers(self, status: int, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """The response headers for the client (hop-by-hop and framing already removed)."""

    def response_body(self, chunk: bytes, end: bool) -> tuple[bytes, Usage | None]:
        """Client bytes for one piece of the upstream body; usage once it is known."""

    def error(self, status: int, body: bytes) -> bytes:
        """The client-format error body for an upstream error response."""

    response_model: str


def overridden_body(ctx: RequestContext, ref: BackendRef) -> dict[str, Any]:
    """The client's body with modelNameOverride applied (the body itself when there is none)."""
    body = ctx.body or {}
    if ref.model_name_override is None:
        return body
    return {**body, "model": ref.model_name_override}


def apply_body_mutation(upstream_body: dict[str, Any], ref: BackendRef) -> dict[str, Any]:
    """The backend's bodyMutation applied to the body sent upstream (after translation), in place.

    As Envoy AI Gateway does: `remove` then `set`, on the top-level fields of the provider's body;
    modelNameOverride is applied before translation (see overridden_body).
    """
    mutation = ref.body_mutation
    for name in mutation.remove:
        upstream_body.pop(name, None)
    for name, value in mutation.set:
        upstream_body[name] = value
    return upstream_body


def mutated_body(ctx: RequestContext, ref: BackendRef) -> dict[str, Any] | None:
    """For passthroughs: the body after modelNameOverride and bodyMutation, or None when nothing changes."""
    mutation = ref.body_mutation
    if ref.model_name_override is None and not mutation.set and not mutation.remove:
        return None
    return apply_body_mutation(dict(overridden_body(ctx, ref)), ref)


def upstream_json_object(raw: bytes, provider: str) -> dict[str, Any]:
    """A backend's JSON object response, or a 502 naming the provider when it is not one."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise GatewayError(502, f"{provider} answered with a body that is not JSON.") from None
    if not isinstance(value, dict):
        raise GatewayError(502, f"{provider} answered with JSON that is not an object.")
    return value


def dumps(value: Any) -> bytes:
    """JSON bytes, the one serializer of the house."""
    return orjson.dumps(value)
