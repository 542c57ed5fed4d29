"""A Backend over TLS: verified with a BackendTLSPolicy's CA, refused when the CA does not match."""

from __future__ import annotations

import ssl
from pathlib import Path

import openai
import pytest
import trustme

from harness import GatewayProcess
from sluicegate.testing import FakeProviderThread

CONFIG = """
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: tls}}
spec:
  rules:
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: demo}}]}}]
      backendRefs: [{{name: secure}}]
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {{name: secure}}
spec:
  schema: {{name: OpenAI}}
  backendRef: {{name: secure-backend, kind: Backend, group: gateway.envoyproxy.io}}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: secure-backend}}
spec:
  endpoints: [{{fqdn: {{hostname: localhost, port: {port}}}}}]
---
apiVersion: gateway.networking.k8s.io/v1alpha3
kind: BackendTLSPolicy
metadata: {{name: secure-tls}}
spec:
  targetRefs: [{{group: gateway.envoyproxy.io, kind: Backend, name: secure-backend}}]
  validation:
    hostname: provider.internal
    caCertificateRefs: [{{group: "", kind: ConfigMap, name: provider-ca}}]
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: provider-ca}}
data:
  ca.crt: |
{ca}
"""


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_fake(ca: trustme.CA):  # type: ignore[no-untyped-def]
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("provider.internal").configure_cert(context)
    with FakeProviderThread(ssl_context=context) as provider:
        yield provider


def config_for(port: int, ca_pem: str) -> str:
    indented = "\n".join("    " + line for line in ca_pem.strip().splitlines())
    return CONFIG.format(port=port, ca=indented)


def test_tls_backend_with_policy_ca(tls_fake: FakeProviderThread, ca: trustme.CA, tmp_path: Path) -> None:
    process = GatewayProcess(config_for(tls_fake.port, ca.cert_pem.bytes().decode()), tmp_path)
    try:
        client = openai.OpenAI(base_url=process.url + "/v1", api_key="k", max_retries=0)
        reply = client.chat.completions.create(
            model="demo", messages=[{"role": "user", "content": "over tls"}]
        )
        assert reply.choices[0].message.content == "Echo: over tls"
        stream = client.chat.completions.create(
            model="demo", messages=[{"role": "user", "content": "tls stream"}], stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Echo: tls stream"
        assert tls_fake.requests[-1].headers["host"] == f"localhost:{tls_fake.port}"
    finally:
        assert process.stop() == 0


def test_tls_backend_with_wrong_ca_is_502(tls_fake: FakeProviderThread, tmp_path: Path) -> None:
    other = trustme.CA()
    process = GatewayProcess(config_for(tls_fake.port, other.cert_pem.bytes().decode()), tmp_path)
    try:
        client = openai.OpenAI(base_url=process.url + "/v1", api_key="k", max_retries=0)
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "x"}])
        assert caught.value.status_code == 502
        assert "certificate" in caught.value.message.lower()
    finally:
        assert process.stop() == 0
