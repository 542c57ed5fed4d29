"""GCPCredentials with workloadIdentityFederationConfig: OIDC token → Google STS → optional impersonation.

The OIDC token (client credentials grant) is exchanged at Google STS (RFC 8693 token exchange, audience
`//iam.googleapis.com/projects/{projectID}/locations/global/workloadIdentityPools/{pool}/providers/{provider}`);
with serviceAccountImpersonation, the STS token then buys a service-account token from IAM credentials
`generateAccessToken` for `{serviceAccountName}@{projectName}.iam.gserviceaccount.com`, as Envoy AI Gateway
does. GCP_STS_URL and GCP_IAM_CREDENTIALS_URL point both elsewhere (for tests).
"""

from __future__ import annotations

import os
import time
from datetime import datetime
from typing import Any

from sluicegate.auth.oidc import _session, _where, oidc_token
from sluicegate.auth.refresh import CredentialFetchError, Refresher
from sluicegate.config.runtime import Credential
from sluicegate.translate.base import UpstreamRequest

STS_URL = "https://sts.googleapis.com/v1/token"
IAM_CREDENTIALS_URL = "https://iamcredentials.googleapis.com"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
IAM_SCOPE = "https://www.googleapis.com/auth/iam"


class GCPWorkloadIdentityCredential:
    """Bearer token from Workload Identity Federation; `/v1/projects/{project}/locations/{region}` prefix."""

    def __init__(self, credential: Credential, **refresher: Any) -> None:
        assert credential.wif is not None
        self.wif = credential.wif
        self.project = credential.project or ""
        self.prefix = f"/v1/projects/{credential.project}/locations/{credential.region}"
        name = f"GCPCredentials {self.wif.pool}/{self.wif.provider} (workload identity)"
        self.refresher: Refresher[str] = Refresher(name, self._fetch, **refresher)

    def __repr__(self) -> str:
        return f"GCPWorkloadIdentityCredential({self.refresher.name}, token=***)"

    async def apply(self, request: UpstreamRequest, authority: str) -> None:
        """Prefix the target with the project and region; set the Bearer token."""
        token = await self.refresher.get()
        request.headers = [h for h in request.headers if h[0] != "authorization"]
        request.headers.append(("authorization", f"Bearer {token}"))
        target = request.target
        request.target = self.prefix + (target if target.startswith("/") else "/" + target)

    def close(self) -> None:
        """Stop refreshing."""
        self.refresher.close()

    async def _fetch(self) -> tuple[str, float]:
        wif = self.wif
        subject, _ = await oidc_token(wif.oidc)
        audience = (
            f"//iam.googleapis.com/projects/{wif.project_id}/locations/global/"
            f"workloadIdentityPools/{wif.pool}/providers/{wif.provider}"
        )
        sts_url = os.environ.get("GCP_STS_URL") or STS_URL
        form = {
            "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
            "audience": audience,
            "scope": IAM_SCOPE if wif.service_account else CLOUD_PLATFORM,
            "requested_token_type": "urn:ietf:params:oauth:token-type:access_token",
            "subject_token": subject,
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        }
        async with _session() as session:
            async with session.post(sts_url, data=form) as response:
                if response.status != 200:
                    raise CredentialFetchError(f"Google STS {_where(sts_url)} answered {response.status}")
                body = await response.json(content_type=None)
            token, lifetime = body.get("access_token"), float(body.get("expires_in") or 3600)
            if not isinstance(token, str) or not token:
                raise CredentialFetchError(f"Google STS {_where(sts_url)} gave no access_token")
            if not wif.service_account:
                return token, lifetime
            email = f"{wif.service_account}@{self.project}.iam.gserviceaccount.com"
            base = os.environ.get("GCP_IAM_CREDENTIALS_URL") or IAM_CREDENTIALS_URL
            url = f"{base.rstrip('/')}/v1/projects/-/serviceAccounts/{email}:generateAccessToken"
            payload = {"scope": [CLOUD_PLATFORM], "lifetime": "3600s"}
            headers = {"authorization": f"Bearer {token}"}
            async with session.post(url, json=payload, headers=headers) as response:
                if response.status != 200:
                    raise CredentialFetchError(
                        f"IAM generateAccessToken for {email} answered {response.status}"
                    )
                body = await response.json(content_type=None)
        token = body.get("accessToken")
        try:
            expires = datetime.fromisoformat(str(body.get("expireTime")).replace("Z", "+00:00")).timestamp()
        except ValueError:
            expires = time.time() + 3600
        if not isinstance(token, str) or not token:
            raise CredentialFetchError(f"IAM generateAccessToken for {email} gave no accessToken")
        return token, expires - time.time()
