"""Static API keys: APIKey (Bearer), AzureAPIKey (api-key), AnthropicAPIKey (x-api-key)."""

from __future__ import annotations

from sluicegate.config.runtime import Credential

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

    async def apply(self, headers: list[tuple[str, str]]) -> None:
        """Set the key header (replacing any of that name)."""
        name = self.header[0]
        headers[:] = [h for h in headers if h[0] != name]
        headers.append(self.header)


def credential_provider(credential: Credential) -> ApiKeyCredential:
    """The provider for a compiled credential (more types arrive with their issue)."""
    return ApiKeyCredential(credential)
