"""Static API keys: APIKey (Bearer), AzureAPIKey (api-key), AnthropicAPIKey (x-api-key)."""

from __future__ import annotations

from sluicegate.config.runtime import Credential
from sluicegate.translate.base import UpstreamRequest

_HEADERS = {
    "APIKey": ("authorization", "Bearer {}"),
    "AzureAPIKey": ("api-key", "{}"),
    "AnthropicAPIKey": ("x-api-key", "{}"),
}


class ApiKeyCredential:
    """Puts a fixed key header on every upstream request."""

    def __init__(self, credential: Credential) -> None:
        name, template = _HEADERS[credential.type]
        self.header = (name, template.format(credential.secret))

    def __repr__(self) -> str:
        return f"ApiKeyCredential({self.header[0]}: ***)"

    async def apply(self, request: UpstreamRequest, authority: str) -> None:
        """Set the key header (replacing any of that name)."""
        name = self.header[0]
        request.headers = [h for h in request.headers if h[0] != name]
        request.headers.append(self.header)
