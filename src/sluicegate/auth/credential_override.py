"""credentialOverride.fromRequestHeaders: per-request upstream credentials from a client header.

The header names default to Envoy AI Gateway's (`x-aigw-api-key` and friends; for AWS a prefix giving
three headers). The forwarder never forwards the default names; a custom name is stripped here. Without
the header the configured credential is used (`fallbackToConfigured`, default true) or the request gets
a 401 in the client API's format.
"""

from __future__ import annotations

from sluicegate.auth.aws_sigv4 import DEFAULT_REGION, SERVICE, SigV4Signer
from sluicegate.config.runtime import Credential
from sluicegate.core.errors import GatewayError
from sluicegate.translate.base import UpstreamRequest

DEFAULT_HEADERS = {
    "APIKey": "x-aigw-api-key",
    "AnthropicAPIKey": "x-aigw-anthropic-api-key",
    "AzureAPIKey": "x-aigw-azure-api-key",
    "AzureCredentials": "x-aigw-azure-access-token",
    "GCPCredentials": "x-aigw-gcp-access-token",
    "AWSCredentials": "x-aigw-aws-",  # a prefix: access-key-id, secret-access-key, session-token
}
AWS_PARTS = ("access-key-id", "secret-access-key", "session-token")
# every default header name; the forwarder drops these from every request it sends upstream
OVERRIDE_HEADERS = frozenset(
    [name for kind, name in DEFAULT_HEADERS.items() if kind != "AWSCredentials"]
    + [DEFAULT_HEADERS["AWSCredentials"] + part for part in AWS_PARTS]
)
_TOKEN_HEADERS = {
    "APIKey": ("authorization", "Bearer {}"),
    "AnthropicAPIKey": ("x-api-key", "{}"),
    "AzureAPIKey": ("api-key", "{}"),
    "AzureCredentials": ("authorization", "Bearer {}"),
    "GCPCredentials": ("authorization", "Bearer {}"),
}
_AUTH_HEADERS = ("authorization", "x-api-key", "api-key")


class CredentialOverrideProvider:
    """Wraps the configured provider; a request carrying the override header uses that credential."""

    def __init__(self, credential: Credential, configured: object | None) -> None:
        assert credential.override is not None
        self.type = credential.type
        self.configured = configured
        self.fallback = credential.override.fallback_to_configured
        name = (credential.override.header or DEFAULT_HEADERS[credential.type]).lower()
        if self.type == "AWSCredentials":
            self.names = tuple(name + part for part in AWS_PARTS)
        else:
            self.names = (name,)
        self.region = credential.region or DEFAULT_REGION
        self.prefix = getattr(configured, "prefix", "")  # GCP: the project/location path prefix

    def __repr__(self) -> str:
        return f"CredentialOverrideProvider({self.type}, headers={self.names})"

    async def apply(self, request: UpstreamRequest, authority: str) -> None:
        """Use the client's per-request credential when present, else the configured one (or 401)."""
        client = request.client_headers or {}
        values = [client.get(name) for name in self.names]
        names = set(self.names)
        request.headers = [h for h in request.headers if h[0] not in names]
        if not any(values):
            if self.fallback and self.configured is not None:
                await self.configured.apply(request, authority)  # type: ignore[attr-defined]
                return
            raise GatewayError(
                401, f"Missing credential: this backend needs the {self.names[0]} request header."
            )
        request.headers = [h for h in request.headers if h[0] not in _AUTH_HEADERS]
        if self.type == "AWSCredentials":
            key_id, secret, token = values
            if not key_id or not secret:
                raise GatewayError(
                    401, f"Incomplete credential: {self.names[0]} and {self.names[1]} go together."
                )
            SigV4Signer(key_id, secret, self.region, SERVICE, token or None).sign(request, authority)
            return
        header, template = _TOKEN_HEADERS[self.type]
        request.headers.append((header, template.format(values[0])))
        if self.type == "GCPCredentials" and self.prefix:
            target = request.target
            request.target = self.prefix + (target if target.startswith("/") else "/" + target)
