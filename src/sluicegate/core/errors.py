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
    ) -> None:
        super().__init__(message)
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
