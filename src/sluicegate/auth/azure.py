"""AzureCredentials: an Entra ID token (client secret, or an OIDC token as federated client assertion).

azure-identity's async credentials fetch the token (scope `https://cognitiveservices.azure.com/.default`)
in the background refresher; requests put the cached token in `Authorization: Bearer`. The authority is
login.microsoftonline.com unless AZURE_AUTHORITY_HOST says otherwise (as in every Azure SDK).
"""

from __future__ import annotations

import os
import time
from typing import Any

from sluicegate.auth.oidc import oidc_token
from sluicegate.auth.refresh import CredentialFetchError, Refresher, shared
from sluicegate.config.runtime import Credential
from sluicegate.translate.base import UpstreamRequest

SCOPE = "https://cognitiveservices.azure.com/.default"


def azure_credential(credential: Credential) -> AzureCredential:
    """The provider for a credential, shared across configs on the same event loop."""
    return shared(credential, lambda: AzureCredential(credential))


class AzureCredential:
    """CredentialProvider for AzureCredentials."""

    def __init__(self, credential: Credential, **refresher: Any) -> None:
        self.credential = credential
        self._assertion: str | None = None  # the current OIDC token, for the federated flow
        how = "OIDC" if credential.oidc is not None else "client secret"
        name = f"AzureCredentials {credential.tenant_id}/{credential.client_id} ({how})"
        self.refresher: Refresher[str] = Refresher(name, self._fetch, **refresher)

    def __repr__(self) -> str:
        return f"AzureCredential({self.refresher.name}, token=***)"

    async def apply(self, request: UpstreamRequest, authority: str) -> None:
        """Set `Authorization: Bearer <Entra token>` (and drop any api-key)."""
        token = await self.refresher.get()
        request.headers = [h for h in request.headers if h[0] not in ("authorization", "api-key")]
        request.headers.append(("authorization", f"Bearer {token}"))

    def close(self) -> None:
        """Stop refreshing."""
        self.refresher.close()

    async def _fetch(self) -> tuple[str, float]:
        """One Entra token from azure-identity."""
        from azure.core.exceptions import ClientAuthenticationError

        if self.credential.oidc is not None:
            self._assertion, _ = await oidc_token(self.credential.oidc)
        try:
            # a fresh credential each time: our refresher is the cache, and timing is ours to choose
            async with self._build() as identity:
                token = await identity.get_token(SCOPE)
        except ClientAuthenticationError as exc:
            authority = os.environ.get("AZURE_AUTHORITY_HOST") or "login.microsoftonline.com"
            status = getattr(exc, "status_code", None) or "an error"
            raise CredentialFetchError(f"Entra ID ({authority}) answered {status}") from None
        return token.token, token.expires_on - time.time()

    def _build(self) -> Any:
        from azure.identity.aio import ClientAssertionCredential, ClientSecretCredential

        c = self.credential
        options: dict[str, Any] = {}
        if ca_file := os.environ.get("SSL_CERT_FILE"):
            options["connection_verify"] = ca_file  # aiohttp reads it only once, at import
        tenant, client = c.tenant_id or "", c.client_id or ""
        if c.oidc is not None:
            return ClientAssertionCredential(tenant, client, self._current_assertion, **options)
        return ClientSecretCredential(tenant, client, c.secret, **options)

    def _current_assertion(self) -> str:
        return self._assertion or ""
