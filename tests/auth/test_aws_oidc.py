"""AWSCredentials oidcExchangeToken: OIDC client credentials → STS AssumeRoleWithWebIdentity → SigV4."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from sluicegate.auth.aws_sigv4 import AWSTemporaryCredential
from sluicegate.config.runtime import Credential, OIDCExchange
from sluicegate.core.errors import GatewayError
from sluicegate.testing.fake_identity import FakeIdentity
from sluicegate.translate.base import UpstreamRequest

ROLE = "arn:aws:iam::123456789012:role/bedrock"


@pytest.fixture
def identity(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeIdentity]:
    with FakeIdentity() as fake:
        monkeypatch.setenv("AWS_ENDPOINT_URL_STS", fake.http_url + "/sts/")
        yield fake


def credential(fake: FakeIdentity, secret: str | None = None) -> Credential:
    s = fake.state
    oidc = OIDCExchange(fake.http_url + "/oidc", s.client_id, secret or s.client_secret, role_arn=ROLE)
    return Credential("AWSCredentials", "", "us-west-2", oidc=oidc)


def test_sts_keys_sign_what_botocore_verifies(identity: FakeIdentity) -> None:
    async def main() -> UpstreamRequest:
        provider = AWSTemporaryCredential(credential(identity))
        request = UpstreamRequest("POST", "/model/m/converse", [("content-type", "application/json")], b"{}")
        await provider.apply(request, "bedrock-runtime.us-west-2.amazonaws.com")
        provider.close()
        return request

    request = asyncio.run(main())
    headers = dict(request.headers)
    key_id = headers["authorization"].split("Credential=")[1].split("/")[0]
    secret, token = identity.state.aws_credentials[key_id]
    assert headers["x-amz-security-token"] == token
    check = AWSRequest(
        "POST",
        "https://bedrock-runtime.us-west-2.amazonaws.com/model/m/converse",
        data=b"{}",
        headers={"content-type": "application/json", "x-amz-date": headers["x-amz-date"]},
    )
    check.context["timestamp"] = headers["x-amz-date"]
    SigV4Auth(Credentials(key_id, secret, token), "bedrock", "us-west-2").add_auth(check)
    assert check.headers["Authorization"] == headers["authorization"]
    forms = [form for path, form in identity.state.requests if path == "/sts/"]
    assert forms[0]["RoleArn"] == ROLE and forms[0]["WebIdentityToken"] in identity.state.oidc_tokens


def test_refused_client_is_a_503_naming_no_secret(identity: FakeIdentity) -> None:
    async def main() -> GatewayError:
        provider = AWSTemporaryCredential(credential(identity, "wrong-s3cret"), first_wait=5)
        with pytest.raises(GatewayError) as caught:
            await provider.apply(UpstreamRequest("POST", "/", [], b""), "h")
        provider.close()
        return caught.value

    error = asyncio.run(main())
    assert error.status == 503 and "401" in error.message
    assert "wrong-s3cret" not in error.message


def _chain_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def _sign_with(credential: Credential) -> dict[str, str]:
    async def main() -> dict[str, str]:
        provider = AWSTemporaryCredential(credential)
        request = UpstreamRequest("POST", "/model/m/converse", [("content-type", "application/json")], b"{}")
        await provider.apply(request, "bedrock-runtime.us-east-1.amazonaws.com")
        provider.close()
        return dict(request.headers)

    return asyncio.run(main())


def test_default_chain_env_vars(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _chain_env(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDFROMENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    headers = _sign_with(Credential("AWSCredentials", "", "us-east-1"))
    assert "Credential=AKIDFROMENV/" in headers["authorization"]
    assert "x-amz-security-token" not in headers


def test_default_chain_web_identity_token_file(
    identity: FakeIdentity, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """botocore's own web-identity provider calls the fake STS, which must answer as STS does."""
    _chain_env(monkeypatch, tmp_path)
    token_file = tmp_path / "token"
    identity.state.oidc_tokens.append("header.payload.sig")
    token_file.write_text("header.payload.sig")
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("AWS_ROLE_ARN", ROLE)
    monkeypatch.setenv("AWS_ROLE_SESSION_NAME", "sluicegate-test")
    headers = _sign_with(Credential("AWSCredentials", "", "us-east-1"))
    key_id = headers["authorization"].split("Credential=")[1].split("/")[0]
    assert key_id in identity.state.aws_credentials
    assert headers["x-amz-security-token"] == identity.state.aws_credentials[key_id][1]
