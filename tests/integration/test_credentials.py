"""Central credentials through a gateway subprocess: AzureCredentials from a fake Entra ID over HTTPS,
short-lived tokens refreshed while requests flow, a failing identity service, credentialOverride headers,
and no secret anywhere in what the gateway printed or returned."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import trustme

from harness import GatewayProcess, backend_yaml
from sluicegate.testing import FakeProviderThread
from sluicegate.testing.fake_identity import FakeIdentity

CONFIG = """
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: route}}
spec:
  rules:
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: azure-model}}]}}]
      backendRefs: [{{name: azure, modelNameOverride: my-deployment}}]
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: byok}}]}}]
      backendRefs: [{{name: byok}}]
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: byok-only}}]}}]
      backendRefs: [{{name: byokonly}}]
{azure}
{byok}
{byokonly}
---
apiVersion: v1
kind: Secret
metadata: {{name: azure-client}}
stringData: {{client-secret: "{azure_secret}"}}
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata: {{name: azure-policy}}
spec:
  targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: azure}}]
  type: AzureCredentials
  azureCredentials:
    clientID: my-client
    tenantID: my-tenant
    clientSecretRef: {{name: azure-client}}
---
apiVersion: v1
kind: Secret
metadata: {{name: byokonly-key}}
stringData: {{apiKey: "{configured_key}"}}
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata: {{name: byokonly-policy}}
spec:
  targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: byokonly}}]
  type: APIKey
  apiKey: {{secretRef: {{name: byokonly-key}}}}
  credentialOverride: {{fromRequestHeaders: {{fallbackToConfigured: false}}}}
"""
BYOK_POLICY = """
  credentialOverride: {fromRequestHeaders: {}}
"""
CONFIGURED_KEY = "sk-configured-upstream-key-123"
CLIENT_KEY = "sk-clients-own-gateway-key-456"
USER_KEY = "sk-user-provided-key-789"


@pytest.fixture(scope="module")
def identity(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FakeIdentity, Path]]:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    ca_file = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with FakeIdentity(context) as fake_identity:
        fake_identity.state.lifetime = 4  # seconds: refreshed every ~2 s while the tests run
        yield fake_identity, ca_file


@pytest.fixture(scope="module")
def gateway(
    fake: FakeProviderThread, identity: tuple[FakeIdentity, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    fake_identity, ca_file = identity
    azure = backend_yaml("azure", fake.port, schema="AzureOpenAI", extra_schema=", version: 2024-10-21")
    byok = backend_yaml("byok", fake.port, api_key=CONFIGURED_KEY) + BYOK_POLICY
    config = CONFIG.format(
        azure=azure,
        byok=byok,
        byokonly=backend_yaml("byokonly", fake.port),
        azure_secret=fake_identity.state.azure_client_secret,
        configured_key=CONFIGURED_KEY,
    )
    env = {"AZURE_AUTHORITY_HOST": fake_identity.https_url, "SSL_CERT_FILE": str(ca_file)}
    process = GatewayProcess(config, tmp_path_factory.mktemp("gw"), env={**os.environ, **env})
    yield process
    process.stop()
    output = process.output()
    secrets = [fake_identity.state.azure_client_secret, CONFIGURED_KEY, CLIENT_KEY, USER_KEY]
    secrets += fake_identity.state.azure_tokens
    for secret in secrets:
        assert secret not in output, "a secret reached the gateway's output"


@pytest.fixture
def client(gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=CLIENT_KEY, max_retries=0)


def test_azure_credentials_bearer_from_entra(
    client: openai.OpenAI, fake: FakeProviderThread, identity: tuple[FakeIdentity, Path]
) -> None:
    fake_identity = identity[0]
    reply = client.chat.completions.create(model="azure-model", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "Echo: hi"
    upstream = fake.requests[-1]
    assert upstream.path == "/openai/deployments/my-deployment/chat/completions"
    token = upstream.headers["authorization"].removeprefix("Bearer ")
    assert token in fake_identity.state.azure_tokens
    assert "api-key" not in upstream.headers and CLIENT_KEY not in str(upstream.headers)
    form = next(form for path, form in fake_identity.state.requests if path == "/my-tenant/oauth2/v2.0/token")
    assert form["client_id"] == "my-client"
    assert form["scope"] == "https://cognitiveservices.azure.com/.default"


def test_short_lived_tokens_refresh_while_requests_flow(
    client: openai.OpenAI, fake: FakeProviderThread, identity: tuple[FakeIdentity, Path]
) -> None:
    fake_identity = identity[0]
    issued_before = len(fake_identity.state.azure_tokens)
    seen = set()
    deadline = time.monotonic() + 6  # more than a token's lifetime
    while time.monotonic() < deadline:
        client.chat.completions.create(model="azure-model", messages=[{"role": "user", "content": "x"}])
        seen.add(fake.requests[-1].headers["authorization"])
        time.sleep(0.25)  # few requests: the harness reads the output only at the end
    assert len(fake_identity.state.azure_tokens) > issued_before
    assert len(seen) >= 2  # the token changed under the flowing requests, none of them failed


def test_failing_identity_service_keeps_the_valid_token_then_503(
    client: openai.OpenAI, gateway: GatewayProcess, identity: tuple[FakeIdentity, Path]
) -> None:
    fake_identity = identity[0]
    client.chat.completions.create(model="azure-model", messages=[{"role": "user", "content": "x"}])
    fake_identity.state.failing = True
    try:
        # a token lives 4 s; until it lapses requests still go through, then they get a clear 503
        statuses = []
        deadline = time.monotonic() + 7
        while time.monotonic() < deadline:
            try:
                client.chat.completions.create(
                    model="azure-model", messages=[{"role": "user", "content": "x"}]
                )
                statuses.append(200)
            except openai.APIStatusError as err:
                statuses.append(err.status_code)
                assert err.status_code == 503
                assert "No valid upstream credential for AzureCredentials" in err.message
                assert fake_identity.state.azure_client_secret not in err.response.text
            time.sleep(0.3)
        assert statuses[0] == 200 and statuses[-1] == 503
        assert statuses == sorted(statuses)  # never back to 200 while the identity service is down
        ready = httpx.get(gateway.admin_url + "/ready").json()
        [state] = [c for c in ready["credentials"] if c["credential"].startswith("AzureCredentials")]
        assert state["valid"] is False and state["refresh_failures"] >= 1
        assert state["problem"].endswith("answered 500")
        metrics = httpx.get(gateway.admin_url + "/metrics").text
        assert "sluicegate_credential_refresh_failures_total" in metrics
        assert fake_identity.state.azure_client_secret not in metrics
    finally:
        fake_identity.state.failing = False
    deadline = time.monotonic() + 10  # the backoff retries and recovers
    while time.monotonic() < deadline:
        try:
            client.chat.completions.create(model="azure-model", messages=[{"role": "user", "content": "x"}])
            break
        except openai.APIStatusError:
            time.sleep(0.3)
    else:
        pytest.fail("the credential did not recover")


def test_credential_override_from_request_header(client: openai.OpenAI, fake: FakeProviderThread) -> None:
    client.chat.completions.create(
        model="byok", messages=[{"role": "user", "content": "x"}], extra_headers={"x-aigw-api-key": USER_KEY}
    )
    upstream = fake.requests[-1]
    assert upstream.headers["authorization"] == f"Bearer {USER_KEY}"
    assert not any(name.startswith("x-aigw-") for name in upstream.headers)
    client.chat.completions.create(model="byok", messages=[{"role": "user", "content": "x"}])
    assert fake.requests[-1].headers["authorization"] == f"Bearer {CONFIGURED_KEY}"


def test_credential_override_required_is_a_401(client: openai.OpenAI, fake: FakeProviderThread) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        client.chat.completions.create(model="byok-only", messages=[{"role": "user", "content": "x"}])
    assert "x-aigw-api-key" in caught.value.message
    client.chat.completions.create(
        model="byok-only",
        messages=[{"role": "user", "content": "x"}],
        extra_headers={"x-aigw-api-key": USER_KEY},
    )
    assert fake.requests[-1].headers["authorization"] == f"Bearer {USER_KEY}"


def test_override_headers_never_leave_the_gateway(client: openai.OpenAI, fake: FakeProviderThread) -> None:
    client.chat.completions.create(
        model="azure-model",
        messages=[{"role": "user", "content": "x"}],
        extra_headers={"x-aigw-api-key": USER_KEY, "x-aigw-aws-secret-access-key": USER_KEY, "api-key": "k"},
    )
    headers = fake.requests[-1].headers
    assert USER_KEY not in str(headers) and "api-key" not in headers


def test_check_output_names_no_secret(
    fake: FakeProviderThread, identity: tuple[FakeIdentity, Path], tmp_path: Path
) -> None:
    fake_identity = identity[0]
    config = CONFIG.format(
        azure=backend_yaml("azure", fake.port, schema="AzureOpenAI", extra_schema=", version: 2024-10-21"),
        byok=backend_yaml("byok", fake.port, api_key=CONFIGURED_KEY) + BYOK_POLICY,
        byokonly=backend_yaml("byokonly", fake.port),
        azure_secret=fake_identity.state.azure_client_secret,
        configured_key=CONFIGURED_KEY,
    )
    path = tmp_path / "config.yaml"
    path.write_text(config)
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {**os.environ, "PYTHONPATH": src}
    result = subprocess.run(
        [sys.executable, "-m", "sluicegate", "check", str(path)], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "AzureCredentials" in result.stdout
    for secret in (fake_identity.state.azure_client_secret, CONFIGURED_KEY):
        assert secret not in result.stdout + result.stderr
