"""GCPCredentials workloadIdentityFederationConfig: OIDC → Google STS → impersonation, against fakes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from sluicegate.auth import credential_provider
from sluicegate.config.compile import load_config
from sluicegate.config.runtime import Credential, GCPWorkloadIdentity, OIDCExchange
from sluicegate.testing.fake_identity import FakeIdentity
from sluicegate.translate.base import UpstreamRequest

YAML = """
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {name: vertex}
spec:
  schema: {name: GCPVertexAI}
  backendRef: {name: vertex, kind: Backend, group: gateway.envoyproxy.io}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: vertex}
spec:
  endpoints: [{fqdn: {hostname: us-central1-aiplatform.googleapis.com, port: 443}}]
---
apiVersion: v1
kind: Secret
metadata: {name: oidc-client}
stringData: {client-secret: "oidc-client-s3cret"}
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata: {name: gcp}
spec:
  targetRefs: [{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: vertex}]
  type: GCPCredentials
  gcpCredentials:
    projectName: my-project
    region: us-central1
    workloadIdentityFederationConfig:
      projectID: "123456"
      workloadIdentityPoolName: pool
      workloadIdentityProviderName: provider
      oidcExchangeToken:
        oidc:
          provider: {issuer: "ISSUER"}
          clientID: sluicegate-client
          clientSecret: {name: oidc-client}
      serviceAccountImpersonation: {serviceAccountName: vertex-caller}
"""


@pytest.fixture
def identity(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeIdentity]:
    with FakeIdentity() as fake:
        monkeypatch.setenv("GCP_STS_URL", fake.http_url + "/google-sts/v1/token")
        monkeypatch.setenv("GCP_IAM_CREDENTIALS_URL", fake.http_url + "/iamcredentials")
        yield fake


def apply(credential: Credential) -> UpstreamRequest:
    async def main() -> UpstreamRequest:
        provider = credential_provider(credential)
        request = UpstreamRequest("POST", "/publishers/google/models/g:generateContent", [], b"{}")
        await provider.apply(request, "h")
        provider.close()  # type: ignore[attr-defined]
        return request

    return asyncio.run(main())


def test_yaml_compiles_and_impersonates(identity: FakeIdentity, tmp_path: Path) -> None:
    (tmp_path / "gcp.yaml").write_text(YAML.replace("ISSUER", identity.http_url + "/oidc"))
    [backend] = load_config([str(tmp_path)], env={}).backends
    assert backend.credential is not None and backend.credential.wif is not None
    assert "oidc-client-s3cret" not in repr(backend.credential)
    request = apply(backend.credential)
    assert request.target.startswith("/v1/projects/my-project/locations/us-central1/publishers/")
    token = dict(request.headers)["authorization"].removeprefix("Bearer ")
    assert token in identity.state.google_tokens
    paths = [path for path, _ in identity.state.requests]
    assert paths[-1] == (
        "/iamcredentials/v1/projects/-/serviceAccounts/"
        "vertex-caller@my-project.iam.gserviceaccount.com:generateAccessToken"
    )
    sts = next(form for path, form in identity.state.requests if path == "/google-sts/v1/token")
    assert sts["audience"] == (
        "//iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/pool/providers/provider"
    )


def test_without_impersonation_the_sts_token_is_used(identity: FakeIdentity) -> None:
    s = identity.state
    oidc = OIDCExchange(identity.http_url + "/oidc", s.client_id, s.client_secret)
    wif = GCPWorkloadIdentity("123456", "pool", "provider", oidc)
    request = apply(Credential("GCPCredentials", "", "europe-west4", project="p", wif=wif))
    assert dict(request.headers)["authorization"].removeprefix("Bearer ") in s.google_sts_tokens
    assert request.target.startswith("/v1/projects/p/locations/europe-west4/")
