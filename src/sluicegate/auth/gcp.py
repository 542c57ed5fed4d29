"""GCPCredentials: a service-account OAuth token, refreshed in the background, and the path prefix.

The token is fetched with google-auth in a worker thread as soon as the provider is built on a running
event loop, and again 5 minutes before it expires; requests only read it. A request that comes before
the first token waits for that fetch (bounded), then fails with a 502 that names the token endpoint
and never the key. Providers are shared per credential, so a config reload keeps the warm token.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import time
import weakref
from typing import Any

from sluicegate.config.runtime import Credential
from sluicegate.core.errors import GatewayError
from sluicegate.translate.base import UpstreamRequest

log = logging.getLogger("sluicegate.auth.gcp")

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
REFRESH_MARGIN = 300.0  # seconds before expiry when the next token is fetched
FIRST_TOKEN_WAIT = 10.0  # how long a request waits for the very first token
TOKEN_TIMEOUT = 10.0  # one token request's HTTP timeout
_RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
_SHARED: weakref.WeakValueDictionary[tuple[Credential, int], GCPCredential] = weakref.WeakValueDictionary()


class _Unusable(ValueError):
    """A service-account JSON we cannot use, for a reason that is safe to show."""


def gcp_credential(credential: Credential) -> Any:
    """The provider for a credential, shared by every config built on the same event loop."""
    if credential.wif is not None:
        from sluicegate.auth.gcp_wif import GCPWorkloadIdentityCredential
        from sluicegate.auth.refresh import shared

        return shared(credential, lambda: GCPWorkloadIdentityCredential(credential))
    try:
        loop_id = id(asyncio.get_running_loop())
    except RuntimeError:
        loop_id = 0
    key = (credential, loop_id)
    provider = _SHARED.get(key)
    if provider is None:
        provider = _SHARED[key] = GCPCredential(credential)
    return provider


class GCPCredential:
    """Bearer token from a service-account JSON; `/v1/projects/{project}/locations/{region}` prefix."""

    def __init__(
        self,
        credential: Credential,
        *,
        refresh_margin: float = REFRESH_MARGIN,
        first_token_wait: float = FIRST_TOKEN_WAIT,
    ) -> None:
        self.refresh_margin = refresh_margin
        self.first_token_wait = first_token_wait
        self.token: str | None = None
        self.expires_at = 0.0  # time.monotonic() deadline of the token
        self.fetches = 0  # tokens fetched so far
        self.failures = 0  # token requests failed in a row
        self.problem: str | None = None  # why there is no usable token (never contains a secret)
        self.token_uri = "the GCP token endpoint"
        self._credentials: Any = None
        self._task: asyncio.Task[None] | None = None
        self._changed: asyncio.Event | None = None
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
            self.prefix = ""
            self.problem = f"the GCPCredentials service-account JSON is unusable ({reason})"
            log.error("%s", self.problem)
            return
        try:
            self._start()
        except RuntimeError:
            pass  # no running loop yet: the first apply() or start() starts the refresher

    def __repr__(self) -> str:
        return f"GCPCredential(prefix={self.prefix!r}, token=***)"

    async def start(self) -> None:
        """Start the refresher if needed and wait (bounded) for the first token."""
        await self._token()

    async def apply(self, request: UpstreamRequest, authority: str) -> None:
        """Prefix the target with the project and region; set the Bearer token."""
        token = await self._token()
        request.headers = [h for h in request.headers if h[0] != "authorization"]
        request.headers.append(("authorization", f"Bearer {token}"))
        target = request.target
        request.target = self.prefix + (target if target.startswith("/") else "/" + target)

    def close(self) -> None:
        """Stop refreshing."""
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._changed = asyncio.Event()
            self._task = loop.create_task(_refresh_forever(weakref.ref(self)), name="gcp-token-refresh")

    async def _token(self) -> str:
        token = self.token
        if token is not None and time.monotonic() < self.expires_at:
            return token
        if self._credentials is None:
            raise GatewayError(502, f"No GCP access token: {self.problem}.")
        self._start()
        assert self._changed is not None
        try:
            async with asyncio.timeout(self.first_token_wait):
                while self.token is None or time.monotonic() >= self.expires_at:
                    changed = self._changed
                    await changed.wait()
                    if self.problem is not None:
                        break
        except TimeoutError:
            pass
        if self.token is None or time.monotonic() >= self.expires_at:
            reason = self.problem or f"no answer from {self.token_uri} within {self.first_token_wait:g}s"
            raise GatewayError(502, f"No GCP access token: {reason}.")
        return self.token

    async def _refresh(self) -> float:
        """Fetch one token; the seconds to wait before the next fetch."""
        credentials = self._credentials
        try:
            await asyncio.to_thread(_fetch, credentials)
        except Exception as exc:
            self.failures += 1
            self.problem = f"{self.token_uri} did not give a token ({type(exc).__name__})"
            log.warning("GCP token refresh failed: %s", self.problem)
            self._notify()
            return _RETRY_DELAYS[min(self.failures, len(_RETRY_DELAYS)) - 1]
        self.failures = 0
        expiry = credentials.expiry  # google-auth keeps it as a naive UTC datetime
        if expiry is None:
            lifetime = 3600.0
        else:
            lifetime = expiry.replace(tzinfo=datetime.UTC).timestamp() - time.time()
        self.token = credentials.token
        self.expires_at = time.monotonic() + lifetime
        self.fetches += 1
        self.problem = None
        self._notify()
        return max(lifetime - self.refresh_margin, 1.0)

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        if changed is not None:
            changed.set()


async def _refresh_forever(ref: weakref.ref[GCPCredential]) -> None:
    """Refresh while the provider lives; holds it only while fetching, so it can be collected."""
    while True:
        provider = ref()
        if provider is None:
            return
        delay = await provider._refresh()
        del provider
        await asyncio.sleep(delay)


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
