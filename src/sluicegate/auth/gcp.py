"""GCPCredentials: a service-account OAuth token, refreshed in the background, and the path prefix.

The token is fetched with google-auth (blocking, so in a worker thread) by the shared background
refresher (auth/refresh.py): at start, then 5 minutes before it expires; requests only read it, and
the credential's state shows on /ready and in the credential metrics. A request before the first
token waits for that fetch (bounded); an unusable service-account JSON is a 502 that never quotes the
key; a token that expired and could not be refreshed is a 503. Providers are shared per credential,
so a config reload keeps the warm token.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import time
from typing import Any

from sluicegate.auth.refresh import FIRST_WAIT, REFRESH_MARGIN, CredentialFetchError, Refresher, shared
from sluicegate.config.runtime import Credential
from sluicegate.core.errors import GatewayError
from sluicegate.translate.base import UpstreamRequest

log = logging.getLogger("sluicegate.auth.gcp")

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
TOKEN_TIMEOUT = 10.0  # one token request's HTTP timeout


class _Unusable(ValueError):
    """A service-account JSON we cannot use, for a reason that is safe to show."""


def gcp_credential(credential: Credential) -> Any:
    """The provider for a credential, shared by every config built on the same event loop."""
    if credential.wif is not None:
        from sluicegate.auth.gcp_wif import GCPWorkloadIdentityCredential

        return shared(credential, lambda: GCPWorkloadIdentityCredential(credential))
    return shared(credential, lambda: GCPCredential(credential))


class GCPCredential:
    """Bearer token from a service-account JSON; `/v1/projects/{project}/locations/{region}` prefix."""

    def __init__(
        self,
        credential: Credential,
        *,
        refresh_margin: float = REFRESH_MARGIN,
        first_token_wait: float = FIRST_WAIT,
    ) -> None:
        self.token_uri = "the GCP token endpoint"
        self.unusable: str | None = None  # why the service-account JSON cannot be used (never a secret)
        self._credentials: Any = None
        self.prefix = ""
        try:
            info = json.loads(credential.secret)
            if not isinstance(info, dict):
                raise _Unusable("not a JSON object")
            project = credential.project or info.get("project_id")
            if not project or not credential.region:
                raise _Unusable("projectName and region are required")
            self.token_uri = str(info.get("token_uri") or "https://oauth2.googleapis.com/token")
            self.prefix = f"/v1/projects/{project}/locations/{credential.region}"
            self._credentials = _service_account(info)
        except Exception as exc:  # only our own reasons are shown: a parser's message could quote the key
            reason = str(exc) if isinstance(exc, _Unusable) else type(exc).__name__
            self.unusable = f"the GCPCredentials service-account JSON is unusable ({reason})"
            log.error("%s", self.unusable)
        name = f"GCPCredentials {credential.project or '?'}/{credential.region or '?'} (service account)"
        self.refresher: Refresher[str] | None = None
        if self._credentials is not None:
            self.refresher = Refresher(name, self._fetch, margin=refresh_margin, first_wait=first_token_wait)

    def __repr__(self) -> str:
        return f"GCPCredential(prefix={self.prefix!r}, token=***)"

    @property
    def fetches(self) -> int:
        """Tokens fetched so far."""
        return self.refresher.fetches if self.refresher is not None else 0

    @property
    def problem(self) -> str | None:
        """Why there is no usable token, if so (never contains a secret)."""
        return self.unusable or (self.refresher.problem if self.refresher is not None else None)

    async def start(self) -> None:
        """Wait (bounded) for the first token."""
        if self.refresher is not None:
            await self.refresher.get()

    async def apply(self, request: UpstreamRequest, authority: str) -> None:
        """Prefix the target with the project and region; set the Bearer token."""
        if self.refresher is None:
            raise GatewayError(502, f"No GCP access token: {self.unusable}.")
        try:
            token = await self.refresher.get()  # the very first token is waited for (bounded)
        except GatewayError:
            if self.refresher.fetches:
                raise  # a token that expired and could not be refreshed: 503
            why = self.refresher.problem or f"no answer from {self.token_uri}"
            raise GatewayError(502, f"No GCP access token: {why}.") from None
        request.headers = [h for h in request.headers if h[0] != "authorization"]
        request.headers.append(("authorization", f"Bearer {token}"))
        target = request.target
        request.target = self.prefix + (target if target.startswith("/") else "/" + target)

    def close(self) -> None:
        """Stop refreshing."""
        if self.refresher is not None:
            self.refresher.close()

    async def _fetch(self) -> tuple[str, float]:
        """One token from the token endpoint and how long it lives."""
        credentials = self._credentials
        try:
            await asyncio.to_thread(_fetch, credentials)
        except Exception as exc:
            raise CredentialFetchError(
                f"{self.token_uri} did not give a token ({type(exc).__name__})"
            ) from None
        expiry = credentials.expiry  # google-auth keeps it as a naive UTC datetime
        lifetime = 3600.0 if expiry is None else expiry.replace(tzinfo=datetime.UTC).timestamp() - time.time()
        return credentials.token, lifetime


def _service_account(info: dict[str, Any]) -> Any:
    from google.oauth2 import service_account

    return service_account.Credentials.from_service_account_info(info, scopes=[SCOPE])


def _fetch(credentials: Any) -> None:
    """One blocking token request (runs in a worker thread)."""
    import google.auth.transport.requests

    transport = google.auth.transport.requests.Request()

    def request(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", TOKEN_TIMEOUT)
        return transport(*args, **kwargs)

    credentials.refresh(request)
