"""The request as it travels through the house, and the writer that answers it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from sluicegate.core.usage import Usage

if TYPE_CHECKING:
    from sluicegate.config.runtime import BackendRef, Rule


@dataclass(slots=True)
class Request:
    """One HTTP request as read by the server: head, headers (lower-cased names) and whole body."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    raw_headers: list[tuple[bytes, bytes]]
    client: str = ""  # peer address


class ClientWriter(Protocol):
    """How a handler answers: one-shot or streamed, with back-pressure."""

    def send(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """Send a whole response with Content-Length."""

    def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        """Start a chunked response."""

    def write(self, data: bytes) -> None:
        """Write one chunk of a started response."""

    async def drain(self) -> None:
        """Wait while the client is not reading (back-pressure)."""

    @property
    def write_paused(self) -> bool:
        """Whether the client is not reading: written data would only pile up."""

    def end(self) -> None:
        """Finish a started response."""

    @property
    def started(self) -> bool:
        """Whether the status line has gone out."""


@dataclass(slots=True)
class RequestContext:
    """Everything known about one request, filled in layer by layer."""

    request: Request
    operation: str  # chat | completion | embeddings | models
    started_at: float = field(default_factory=time.monotonic)
    body: dict[str, Any] | None = None  # the parsed JSON body
    model: str = ""  # the model the client asked for
    stream: bool = False
    rule: Rule | None = None
    backend_ref: BackendRef | None = None
    attempts: int = 0
    status: int = 0
    usage: Usage | None = None
    response_model: str = ""
    error: str = ""  # what went wrong, for logs; never a secret
    costs: dict[str, int] = field(default_factory=dict)  # llmRequestCosts metadataKey -> cost of this request
    response_headers: list[tuple[bytes, bytes]] = field(default_factory=list)  # filters add these to answers
    force_usage: bool = False  # costs need usage: ask the backend for stream usage, hide it from the client
    limit_state: Any = None  # what the rate-limit filter admitted, to charge on completion
    attempt_log: list[str] = field(default_factory=list)  # "backend:outcome" of each upstream attempt
    first_byte_at: float = 0.0  # time.monotonic() of the first response byte written to the client
    upstream_seconds: float = 0.0  # time spent waiting on upstreams (all attempts), for the overhead metric
    trace: Any = None  # the request's trace (observability.tracing) when tracing is on, else None
    response_filter: Any = None  # (client_bytes, end) -> client_bytes or an awaitable of them
