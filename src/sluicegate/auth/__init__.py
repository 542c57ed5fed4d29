"""Upstream credentials: one module per credential type; `credential_provider` picks by type."""

from __future__ import annotations

from typing import Protocol

from sluicegate.config.runtime import Credential
from sluicegate.translate.base import UpstreamRequest


class CredentialProvider(Protocol):
    """Signs or decorates an upstream request; refreshes run in the background, never here."""

    async def apply(self, request: UpstreamRequest, authority: str) -> None:
        """Add credentials to the request about to go to `authority` (host[:port])."""


def credential_provider(credential: Credential) -> CredentialProvider:
    """The provider for a compiled credential."""
    from sluicegate.auth.api_key import ApiKeyCredential
    from sluicegate.auth.aws_sigv4 import aws_credential
    from sluicegate.auth.azure import azure_credential
    from sluicegate.auth.credential_override import CredentialOverrideProvider
    from sluicegate.auth.gcp import gcp_credential

    providers = {
        "APIKey": ApiKeyCredential,
        "AzureAPIKey": ApiKeyCredential,
        "AnthropicAPIKey": ApiKeyCredential,
        "AWSCredentials": aws_credential,
        "AzureCredentials": azure_credential,
        "GCPCredentials": gcp_credential,
    }
    provider = providers[credential.type](credential)
    if credential.override is not None:
        return CredentialOverrideProvider(credential, provider)
    return provider
