"""The admin listener: /health, /ready and /metrics (Prometheus text)."""

from __future__ import annotations

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from sluicegate.auth.refresh import states as credential_states
from sluicegate.core.context import ClientWriter, Request

JSON = [(b"content-type", b"application/json")]


class Admin:
    """Answers the admin endpoints; `ready` turns false while the gateway drains."""

    def __init__(self) -> None:
        self.ready = False

    async def handle(self, request: Request, client: ClientWriter) -> None:
        """Route one admin request."""
        if request.path == "/health":
            client.send(200, JSON, b'{"status":"ok"}')
        elif request.path == "/ready":
            body: dict = {"status": "ready" if self.ready else "not ready"}
            if credentials := credential_states():
                body["credentials"] = credentials  # names, validity, failures; never a secret
            client.send(200 if self.ready else 503, JSON, orjson.dumps(body))
        elif request.path == "/metrics":
            client.send(200, [(b"content-type", CONTENT_TYPE_LATEST.encode())], generate_latest(REGISTRY))
        else:
            client.send(404, JSON, orjson.dumps({"error": f"unknown admin path {request.path}"}))

    @staticmethod
    def render_error(request: Request | None, status: int, message: str) -> tuple[list, bytes]:
        """Plain JSON errors for the admin listener."""
        return JSON, orjson.dumps({"error": message})
