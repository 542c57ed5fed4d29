"""credentialOverride.fromRequestHeaders: per-request keys from client headers, stripped, or a 401."""

from __future__ import annotations

import asyncio

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from sluicegate.auth import credential_provider
from sluicegate.config.runtime import Credential, CredentialOverride
from sluicegate.core.errors import GatewayError
from sluicegate.translate.base import UpstreamRequest

AWS_FILE = "[default]\naws_access_key_id = AKIDCONFIGURED\naws_secret_access_key = configured-secret\n"


def run(credential: Credential, client: dict[str, str]) -> UpstreamRequest:
    headers = [("content-type", "application/json")] + [(k, v) for k, v in client.items()]
    request = UpstreamRequest("POST", "/model/m/converse", headers, b"{}", client_headers=client)
    asyncio.run(credential_provider(credential).apply(request, "bedrock.example"))
    return request


def test_aws_keys_from_headers_sign_what_botocore_verifies() -> None:
    credential = Credential("AWSCredentials", AWS_FILE, "eu-west-1", override=CredentialOverride())
    client = {
        "x-aigw-aws-access-key-id": "AKIDUSER",
        "x-aigw-aws-secret-access-key": "user-secret",
        "x-aigw-aws-session-token": "user-token",
    }
    headers = dict(run(credential, client).headers)
    assert not any(name.startswith("x-aigw-") for name in headers)
    check = AWSRequest(
        "POST",
        "https://bedrock.example/model/m/converse",
        data=b"{}",
        headers={"content-type": "application/json"},
    )
    check.context["timestamp"] = headers["x-amz-date"]
    SigV4Auth(Credentials("AKIDUSER", "user-secret", "user-token"), "bedrock", "eu-west-1").add_auth(check)
    assert check.headers["Authorization"] == headers["authorization"]
    assert "Credential=AKIDCONFIGURED" in dict(run(credential, {}).headers)["authorization"]


def test_incomplete_aws_keys_do_not_fall_back() -> None:
    credential = Credential("AWSCredentials", AWS_FILE, "eu-west-1", override=CredentialOverride())
    with pytest.raises(GatewayError) as caught:
        run(credential, {"x-aigw-aws-access-key-id": "AKIDUSER"})
    assert caught.value.status == 401


@pytest.mark.parametrize(
    ("kind", "header", "upstream", "value"),
    [
        ("AnthropicAPIKey", "x-aigw-anthropic-api-key", "x-api-key", "k1"),
        ("AzureAPIKey", "x-aigw-azure-api-key", "api-key", "k1"),
        ("APIKey", "x-my-key", "authorization", "Bearer k1"),
    ],
)
def test_key_types_and_custom_header(kind: str, header: str, upstream: str, value: str) -> None:
    custom = header if header == "x-my-key" else None
    credential = Credential(kind, "configured", override=CredentialOverride(custom, False))
    headers = dict(run(credential, {header: "k1"}).headers)
    assert headers[upstream] == value and header not in headers
    with pytest.raises(GatewayError) as caught:
        run(credential, {})
    assert caught.value.status == 401 and header in caught.value.message
