"""Upstream credentials: one module per credential type; `credential_provider` picks by type."""

from __future__ import annotations

from importlib import import_module
from typing import Protocol

from sluicegate.config.runtime import Credential
from sluicegate.translate.base import UpstreamRequest


class CredentialProvider(Protocol):
    """Signs or decorates an upstream request; refreshes run in the background, never here."""

    async def apply(self, request: UpstreamRequest, authority: str) -> None:
        """Add credentials to the request about to go to `authority` (host[:port])."""


# credential type -> (module in sluicegate.auth, factory). Only the module of a type in use is imported:
# Azure's loads aiohttp (~9 MB of RSS), which a gateway without Azure credentials never needs.
_PROVIDERS = {
    "APIKey": ("api_key", "ApiKeyCredential"),
    "AzureAPIKey": ("api_key", "ApiKeyCredential"),
    "AnthropicAPIKey": ("api_key", "ApiKeyCredential"),
    "AWSCredentials": ("aws_sigv4", "aws_credential"),
    "AzureCredentials": ("azure", "azure_credential"),
    "GCPCredentials": ("gcp", "gcp_credential"),
}


def credential_provider(credential: Credential) -> CredentialProvider:
    """The provider for a compiled credential."""
    module, factory = _PROVIDERS[credential.type]
    provider: CredentialProvider = getattr(import_module(f"sluicegate.auth.{module}"), factory)(credential)
    if credential.override is not None:
        from sluicegate.auth.credential_override import CredentialOverrideProvider

        return CredentialOverrideProvider(credential, provider)
    return provider
