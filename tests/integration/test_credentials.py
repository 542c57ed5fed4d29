"""Central credentials through a gateway subprocess: AzureCredentials from a fake Entra ID over HTTPS
(client secret, and an OIDC token as federated assertion), AWS OIDC → STS temporary keys verified by the
fake Bedrock, GCP workload identity federation (with and without impersonation) accepted by the fake
Vertex, short-lived credentials refreshed while requests flow, a failing identity service,
credentialOverride headers, and no secret anywhere in what the gateway printed or returned."""

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
from sluicegate.testing import FakeProviderThread, fake_gemini
from sluicegate.testing.fake_bedrock import trusted_keys
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
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: azure-oidc}}]}}]
      backendRefs: [{{name: azureoidc, modelNameOverride: my-deployment}}]
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: bedrock-sts}}]}}]
      backendRefs: [{{name: bedrock, modelNameOverride: "{claude}"}}]
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: gemini-wif}}]}}]
      backendRefs: [{{name: geminiwif, modelNameOverride: gemini-2.0-flash}}]
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: gemini-sts}}]}}]
      backendRefs: [{{name: geminists, modelNameOverride: gemini-2.0-flash}}]
{azure}
{byok}
{byokonly}
{federated}
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
# Backends whose credentials start at the fake OIDC issuer: Azure (assertion), AWS (STS), GCP (WIF).
FEDERATED = """
---
apiVersion: v1
kind: Secret
metadata: {{name: oidc-client}}
stringData: {{client-secret: "{oidc_secret}"}}
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata: {{name: azure-oidc-policy}}
spec:
  targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: azureoidc}}]
  type: AzureCredentials
  azureCredentials:
    clientID: my-client
    tenantID: oidc-tenant
    oidcExchangeToken:
      oidc:
        provider: {{issuer: "{issuer}"}}
        clientID: {oidc_client}
        clientSecret: {{name: oidc-client}}
      aud: api://AzureADTokenExchange
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata: {{name: aws-policy}}
spec:
  targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: bedrock}}]
  type: AWSCredentials
  awsCredentials:
    region: us-east-1
    oidcExchangeToken:
      oidc:
        provider: {{issuer: "{issuer}"}}
        clientID: {oidc_client}
        clientSecret: {{name: oidc-client}}
      awsRoleArn: {role}
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata: {{name: gcp-wif-policy}}
spec:
  targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: geminiwif}}]
  type: GCPCredentials
  gcpCredentials:
    projectName: my-project
    region: us-central1
    workloadIdentityFederationConfig:
      projectID: "123456789012"
      workloadIdentityPoolName: my-pool
      workloadIdentityProviderName: my-provider
      oidcExchangeToken:
        oidc:
          provider: {{issuer: "{issuer}"}}
          clientID: {oidc_client}
          clientSecret: {{name: oidc-client}}
      serviceAccountImpersonation: {{serviceAccountName: vertex-caller}}
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata: {{name: gcp-sts-policy}}
spec:
  targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: geminists}}]
  type: GCPCredentials
  gcpCredentials:
    projectName: my-project
    region: us-central1
    workloadIdentityFederationConfig:
      projectID: "123456789012"
      workloadIdentityPoolName: my-pool
      workloadIdentityProviderName: my-provider
      oidcExchangeToken:
        oidc:
          provider: {{issuer: "{issuer}"}}
          clientID: {oidc_client}
          clientSecret: {{name: oidc-client}}
"""
CLAUDE = "anthropic.claude-3-5-sonnet-20240620-v1:0"
ROLE = "arn:aws:iam::123456789012:role/bedrock-invoker"
GEMINI_PATH = "/v1/projects/my-project/locations/us-central1/publishers/google/models/gemini-2.0-flash"
RETURNED: list[str] = []  # everything the gateway answered the tests' clients: status, headers, body
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


def federated_yaml(fake: FakeProviderThread, fake_identity: FakeIdentity) -> str:
    """The Azure-OIDC, Bedrock-STS and Vertex-WIF backends and their policies."""
    azure_version = ", version: 2024-10-21"
    return (
        backend_yaml("azureoidc", fake.port, schema="AzureOpenAI", extra_schema=azure_version)
        + backend_yaml("bedrock", fake.port, schema="AWSBedrock")
        + backend_yaml("geminiwif", fake.port, schema="GCPVertexAI")
        + backend_yaml("geminists", fake.port, schema="GCPVertexAI")
        + FEDERATED.format(
            issuer=fake_identity.http_url + "/oidc",
            oidc_client=fake_identity.state.client_id,
            oidc_secret=fake_identity.state.client_secret,
            role=ROLE,
        )
    )


def secrets_of(fake_identity: FakeIdentity) -> list[str]:
    """Every secret and token value the tests configured or the fake identity services issued."""
    s = fake_identity.state
    values = [s.azure_client_secret, s.client_secret, CONFIGURED_KEY, CLIENT_KEY, USER_KEY]
    values += s.azure_tokens + s.oidc_tokens + s.google_sts_tokens + s.google_tokens
    values += [value for pair in s.aws_credentials.values() for value in pair]
    return values


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
        federated=federated_yaml(fake, fake_identity),
        claude=CLAUDE,
        azure_secret=fake_identity.state.azure_client_secret,
        configured_key=CONFIGURED_KEY,
    )
    env = {
        "AZURE_AUTHORITY_HOST": fake_identity.https_url,
        "SSL_CERT_FILE": str(ca_file),
        "AWS_ENDPOINT_URL_STS": fake_identity.http_url + "/sts/",
        "GCP_STS_URL": fake_identity.http_url + "/google-sts/v1/token",
        "GCP_IAM_CREDENTIALS_URL": fake_identity.http_url + "/iamcredentials",
    }
    # the fakes accept what the fake identity services issue: STS keys (Bedrock), Google tokens (Vertex)
    aws_keys = trusted_keys(fake.provider)
    vertex = fake_gemini.state(fake.provider)
    aws_keys.append(fake_identity.state.aws_credentials)
    vertex.trusted += [fake_identity.state.google_tokens, fake_identity.state.google_sts_tokens]
    process = GatewayProcess(config, tmp_path_factory.mktemp("gw"), env={**os.environ, **env})
    try:
        yield process
    finally:
        process.stop()
        aws_keys.remove(fake_identity.state.aws_credentials)
        vertex.trusted.remove(fake_identity.state.google_tokens)
        vertex.trusted.remove(fake_identity.state.google_sts_tokens)
    output = process.output()
    for secret in secrets_of(fake_identity):
        assert secret not in output, "a secret reached the gateway's output"


def _record(response: httpx.Response) -> None:
    response.read()
    RETURNED.append(f"{response.status_code} {dict(response.headers)} {response.text}")


@pytest.fixture
def client(gateway: GatewayProcess) -> openai.OpenAI:
    recording = httpx.Client(event_hooks={"response": [_record]})
    return openai.OpenAI(
        base_url=gateway.url + "/v1", api_key=CLIENT_KEY, max_retries=0, http_client=recording
    )


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


def test_azure_oidc_federated_assertion(
    client: openai.OpenAI, fake: FakeProviderThread, identity: tuple[FakeIdentity, Path]
) -> None:
    state = identity[0].state
    reply = client.chat.completions.create(model="azure-oidc", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "Echo: hi"
    upstream = fake.requests[-1]
    assert upstream.path == "/openai/deployments/my-deployment/chat/completions"
    assert upstream.headers["authorization"].removeprefix("Bearer ") in state.azure_tokens
    forms = [form for path, form in state.requests if path == "/oidc-tenant/oauth2/v2.0/token"]
    assert forms and all("client_secret" not in form for form in forms)
    assert forms[-1]["client_assertion"] in state.oidc_tokens
    assert forms[-1]["client_assertion_type"].endswith("jwt-bearer")
    issued = [form for path, form in state.requests if path == "/oidc/token"]
    assert any(form.get("audience") == "api://AzureADTokenExchange" for form in issued)


def test_aws_sts_temporary_keys_signed_and_verified(
    client: openai.OpenAI, fake: FakeProviderThread, identity: tuple[FakeIdentity, Path]
) -> None:
    state = identity[0].state
    raw = client.chat.completions.with_raw_response.create(
        model="bedrock-sts", messages=[{"role": "user", "content": "hello bedrock"}]
    )
    assert raw.parse().choices[0].message.content == "Echo: hello bedrock"
    assert raw.headers["x-fake-sigv4"] == "valid"  # the fake verified the signature with the STS keys
    upstream = fake.requests[-1]
    assert upstream.path == f"/model/{CLAUDE}/converse"
    key_id = upstream.headers["authorization"].split("Credential=")[1].split("/")[0]
    assert key_id.startswith("ASIAFAKE")
    assert upstream.headers["x-amz-security-token"] == state.aws_credentials[key_id][1]
    forms = [form for path, form in state.requests if path == "/sts/"]
    assert forms[-1]["RoleArn"] == ROLE and forms[-1]["WebIdentityToken"] in state.oidc_tokens


def test_aws_session_token_is_checked_by_the_fake(fake: FakeProviderThread) -> None:
    # the proof above means something only if a wrong session token would have failed
    import orjson
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    keys = {"ASIATEST": ("test-secret", "right-token")}
    trusted_keys(fake.provider).append(keys)
    try:
        statuses = []
        for token in ("right-token", "wrong-token"):
            body = orjson.dumps({"messages": [{"role": "user", "content": [{"text": "x"}]}]})
            request = AWSRequest("POST", f"{fake.base_url}/model/{CLAUDE}/converse", data=body)
            request.headers["content-type"] = "application/json"
            SigV4Auth(Credentials("ASIATEST", "test-secret", token), "bedrock", "us-east-1").add_auth(request)
            answer = httpx.post(request.url, content=body, headers=dict(request.headers))
            statuses.append((answer.status_code, answer.headers.get("x-fake-sigv4")))
        assert statuses[0] == (200, "valid") and statuses[1][0] == 403
    finally:
        trusted_keys(fake.provider).remove(keys)


def test_aws_temporary_keys_refresh_while_requests_flow(
    client: openai.OpenAI, fake: FakeProviderThread, identity: tuple[FakeIdentity, Path]
) -> None:
    state = identity[0].state
    issued_before = len(state.aws_credentials)
    key_ids = set()
    deadline = time.monotonic() + 6  # more than the keys' 4 s lifetime
    while time.monotonic() < deadline:
        raw = client.chat.completions.with_raw_response.create(
            model="bedrock-sts", messages=[{"role": "user", "content": "x"}]
        )  # raises on any failed request
        assert raw.headers["x-fake-sigv4"] == "valid"
        key_ids.add(fake.requests[-1].headers["authorization"].split("Credential=")[1].split("/")[0])
        time.sleep(0.25)
    assert len(state.aws_credentials) > issued_before
    assert len(key_ids) >= 2  # new temporary keys were used before the old ones lapsed


@pytest.mark.parametrize(
    ("model", "issued"), [("gemini-wif", "google_tokens"), ("gemini-sts", "google_sts_tokens")]
)
def test_gcp_workload_identity_federation(
    client: openai.OpenAI,
    fake: FakeProviderThread,
    identity: tuple[FakeIdentity, Path],
    model: str,
    issued: str,
) -> None:
    state = identity[0].state
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hello vertex"}]
    )
    assert reply.choices[0].message.content == "Echo: hello vertex"
    upstream = fake.requests[-1]
    assert upstream.path == GEMINI_PATH + ":generateContent"
    assert upstream.headers["authorization"].removeprefix("Bearer ") in getattr(state, issued)
    sts = [form for path, form in state.requests if path == "/google-sts/v1/token"]
    assert sts[-1]["audience"] == (
        "//iam.googleapis.com/projects/123456789012/locations/global/"
        "workloadIdentityPools/my-pool/providers/my-provider"
    )
    assert sts[-1]["subject_token"] in state.oidc_tokens
    if model == "gemini-wif":
        impersonated = [p for p, _ in state.requests if p.endswith(":generateAccessToken")]
        assert impersonated[-1].endswith(
            "/vertex-caller@my-project.iam.gserviceaccount.com:generateAccessToken"
        )


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
        name = "AzureCredentials my-tenant/"  # the client-secret one
        [state] = [c for c in ready["credentials"] if c["credential"].startswith(name)]
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
        federated=federated_yaml(fake, fake_identity),
        claude=CLAUDE,
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
    for secret in (
        fake_identity.state.azure_client_secret,
        fake_identity.state.client_secret,
        CONFIGURED_KEY,
    ):
        assert secret not in result.stdout + result.stderr


def test_no_secret_in_anything_the_gateway_printed_or_returned(
    gateway: GatewayProcess, identity: tuple[FakeIdentity, Path]
) -> None:
    """Runs last: stops the gateway, then greps its whole output, every answer the tests got, /ready and
    /metrics for every secret configured and every token or key the fake identity services issued."""
    fake_identity = identity[0]
    RETURNED.append(httpx.get(gateway.admin_url + "/ready").text)
    RETURNED.append(httpx.get(gateway.admin_url + "/metrics").text)
    assert gateway.stop() == 0
    seen = gateway.output() + "\n".join(RETURNED)
    secrets = secrets_of(fake_identity)
    assert fake_identity.state.aws_credentials and fake_identity.state.google_tokens  # the chains ran
    assert fake_identity.state.google_sts_tokens and fake_identity.state.oidc_tokens
    leaked = [secret for secret in secrets if secret in seen]
    assert not leaked, f"{len(leaked)} secret value(s) reached what the gateway printed or returned"
