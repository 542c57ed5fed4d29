"""GatewayError and the error envelopes of each client API."""

from __future__ import annotations

import orjson

ROUTE_NOT_FOUND = (
    "No matching route found. It is likely because the model specified in your request "
    "is not configured in the Gateway."
)

_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}


class GatewayError(Exception):
    """An error the gateway answers itself, rendered in the client API's format."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        type: str | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        super().__init__(message)
        self.headers = headers or []  # extra response headers, e.g. Retry-After on a 429
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.type = type

    def openai_body(self) -> bytes:
        """The OpenAI error envelope: {"error": {"message", "type", "param", "code"}}."""
        error_type = (
            self.type
            or _OPENAI_TYPES.get(self.status)
            or ("server_error" if self.status >= 500 else "invalid_request_error")
        )
        return orjson.dumps(
            {"error": {"message": self.message, "type": error_type, "param": self.param, "code": self.code}}
        )

    def anthropic_body(self) -> bytes:
        """The Anthropic error envelope: {"type": "error", "error": {"type", "message"}}."""
        error_type = _ANTHROPIC_TYPES.get(self.status) or (
            "api_error" if self.status >= 500 else "invalid_request_error"
        )
        return orjson.dumps({"type": "error", "error": {"type": error_type, "message": self.message}})

    def cohere_body(self) -> bytes:
        """Cohere's v2 error body: {"message"}."""
        return orjson.dumps({"message": self.message})

    def stream_event(self, api: str) -> bytes:
        """The error as the last event of a server-sent-event stream in a client API's format."""
        if api == "anthropic":
            return b"event: error\ndata: " + self.anthropic_body() + b"\n\n"
        return b"data: " + self.body(api) + b"\n\n"

    def body(self, api: str) -> bytes:
        """The error body in a client API's format: "openai", "anthropic" or "cohere"."""
        if api == "cohere":
            return self.cohere_body()
        return self.anthropic_body() if api == "anthropic" else self.openai_body()
