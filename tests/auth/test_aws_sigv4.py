"""Our SigV4 signer against botocore's SigV4Auth and against boto3 itself, over a table of requests."""

from __future__ import annotations

import asyncio
import datetime
import json

import boto3
import botocore.auth
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from sluicegate.auth import credential_provider
from sluicegate.auth.aws_sigv4 import (
    AWSCredentialsError,
    AWSSigV4Credential,
    SigV4Signer,
    read_credentials_file,
)
from sluicegate.config.runtime import Credential
from sluicegate.testing import FakeProviderThread
from sluicegate.testing.fake_bedrock import FAKE_ACCESS_KEY, FAKE_SECRET_KEY
from sluicegate.translate.base import UpstreamRequest

WHEN = datetime.datetime(2026, 11, 27, 23, 59, 58)
AMZ_DATE = "20261127T235958Z"
CLAUDE_PATH = "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0"
ARN_PATH = "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Aapplication-inference-profile%2Fabc123"

# (method, scheme, authority, target, body, extra headers, session token, region, service)
TABLE: list[tuple[str, str, str, str, bytes, dict[str, str], str | None, str, str]] = [
    (
        "POST",
        "https",
        "bedrock-runtime.us-east-1.amazonaws.com",
        f"{CLAUDE_PATH}/converse",
        b'{"messages":[]}',
        {},
        None,
        "us-east-1",
        "bedrock",
    ),
    (
        "POST",
        "https",
        "bedrock-runtime.us-east-1.amazonaws.com",
        f"{CLAUDE_PATH}/converse-stream",
        b"{}",
        {},
        "FwoGZXIvYXdzEJr//////////wEaDSession+Token/=",
        "us-east-1",
        "bedrock",
    ),
    (
        "POST",
        "https",
        "bedrock-runtime.eu-west-3.amazonaws.com",
        f"{ARN_PATH}/invoke",
        '{"inputText": "héllo ✓"}'.encode(),
        {},
        None,
        "eu-west-3",
        "bedrock",
    ),
    (
        "POST",
        "http",
        "127.0.0.1:8090",
        f"{CLAUDE_PATH}/invoke-with-response-stream",
        b"",
        {},
        None,
        "us-east-1",
        "bedrock",
    ),
    (
        "GET",
        "https",
        "bedrock.us-east-1.amazonaws.com",
        "/foundation-models?byProvider=anthropic&byOutputModality=TEXT",
        b"",
        {},
        None,
        "us-east-1",
        "bedrock",
    ),
    (
        "GET",
        "https",
        "bedrock.us-east-1.amazonaws.com",
        "/x?b=2&a=3&a=1&c=&d=%2F%3A",
        b"",
        {},
        None,
        "us-east-1",
        "bedrock",
    ),
    (
        "POST",
        "https",
        "bedrock-runtime.us-west-2.amazonaws.com",
        "/model/a/./b/../c//converse",
        b"x",
        {},
        None,
        "us-west-2",
        "bedrock",
    ),
    (
        "POST",
        "http",
        "[::1]:9000",
        "/model/m%3A1/converse",
        b"{}",
        {"x-amz-user-agent": "  spaced   value  "},
        None,
        "ap-south-1",
        "bedrock",
    ),
    (
        "POST",
        "https",
        "sts.amazonaws.com",
        "/",
        b"Action=GetCallerIdentity&Version=2011-06-15",
        {},
        None,
        "us-east-1",
        "sts",
    ),
]


def _botocore_authorization(
    monkeypatch: pytest.MonkeyPatch,
    method: str,
    url: str,
    body: bytes,
    headers: dict[str, str],
    token: str | None,
    region: str,
    service: str,
) -> str:
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: WHEN)
    request = AWSRequest(method, url, data=body, headers=headers)
    SigV4Auth(
        Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token), service, region
    ).add_auth(request)
    return request.headers["Authorization"]


@pytest.mark.parametrize(
    ("method", "scheme", "authority", "target", "body", "extra", "token", "region", "service"), TABLE
)
def test_signature_equals_botocore(
    monkeypatch: pytest.MonkeyPatch,
    method: str,
    scheme: str,
    authority: str,
    target: str,
    body: bytes,
    extra: dict[str, str],
    token: str | None,
    region: str,
    service: str,
) -> None:
    headers = {"content-type": "application/json", **extra} if method == "POST" else dict(extra)
    expected = _botocore_authorization(
        monkeypatch, method, f"{scheme}://{authority}{target}", body, headers, token, region, service
    )
    signer = SigV4Signer("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", region, service, token)
    request = UpstreamRequest(method, target, [*headers.items(), ("user-agent", "not signed")], body)
    signer.sign(request, authority, AMZ_DATE)
    sent = dict(request.headers)
    assert sent["authorization"] == expected
    assert sent["x-amz-date"] == AMZ_DATE
    assert sent.get("x-amz-security-token") == token
    assert "x-amz-content-sha256" not in sent  # botocore adds it only for S3 and unsigned payloads


def test_derived_key_is_cached_per_day() -> None:
    signer = SigV4Signer("AKID", "secret", "us-east-1")
    key = signer.signing_key("20261127")
    assert signer.signing_key("20261127") is key
    assert signer.signing_key("20261128") != key


def test_signature_equals_what_boto3_sent(fake: FakeProviderThread) -> None:
    """boto3 signs more headers than we do; given the same headers and date, we compute its signature."""
    fake.reset()
    client = boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=f"http://127.0.0.1:{fake.port}",
        aws_access_key_id=FAKE_ACCESS_KEY,
        aws_secret_access_key=FAKE_SECRET_KEY,
    )
    client.converse(
        modelId="anthropic.claude-3-haiku-20240307-v1:0",
        messages=[{"role": "user", "content": [{"text": "hi"}]}],
    )
    body = json.dumps({"inputText": "a"}).encode()
    client.invoke_model(modelId="amazon.titan-embed-text-v2:0", body=body)
    signer = SigV4Signer(FAKE_ACCESS_KEY, FAKE_SECRET_KEY, "us-east-1")
    raw_paths = [
        "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse",
        "/model/amazon.titan-embed-text-v2%3A0/invoke",
    ]
    for recorded, target in zip(fake.requests, raw_paths, strict=True):
        fields = dict(
            part.strip().split("=", 1)
            for part in recorded.headers["authorization"].split(" ", 1)[1].split(",")
        )
        names = fields["SignedHeaders"].split(";")
        signed, signature = signer.signature(
            "POST",
            target,
            [(n, recorded.headers[n]) for n in names],
            recorded.body,
            recorded.headers["x-amz-date"],
        )
        assert signed == fields["SignedHeaders"]
        assert signature == fields["Signature"]


CREDENTIALS = """
[default]
aws_access_key_id = AKIDDEFAULT
aws_secret_access_key = default-secret

[profile team]
aws_access_key_id=AKIDTEAM
aws_secret_access_key=team-secret
aws_session_token=team-token
region=eu-central-1

[broken]
aws_access_key_id = AKIDBROKEN
"""


def test_credentials_file_profiles() -> None:
    assert read_credentials_file(CREDENTIALS, None) == ("AKIDDEFAULT", "default-secret", None, None)
    assert read_credentials_file(CREDENTIALS, "team") == (
        "AKIDTEAM",
        "team-secret",
        "team-token",
        "eu-central-1",
    )


@pytest.mark.parametrize(
    ("text", "profile", "words"),
    [
        (CREDENTIALS, "missing", "no profile [missing]"),
        (CREDENTIALS, "broken", "needs aws_access_key_id and aws_secret_access_key"),
        ("aws_secret_access_key = leaked-secret\n[", None, "not valid INI"),
    ],
)
def test_credentials_file_problems_never_show_secrets(text: str, profile: str | None, words: str) -> None:
    with pytest.raises(AWSCredentialsError) as info:
        read_credentials_file(text, profile)
    assert words in str(info.value)
    assert "secret" not in str(info.value).replace("aws_secret_access_key", "")


def test_provider_signs_for_the_authority_and_region() -> None:
    provider = credential_provider(Credential("AWSCredentials", CREDENTIALS, region=None, profile="team"))
    assert isinstance(provider, AWSSigV4Credential)
    assert "team-secret" not in repr(provider)
    request = UpstreamRequest(
        "POST", f"{CLAUDE_PATH}/converse", [("content-type", "application/json")], b"{}"
    )
    asyncio.run(provider.apply(request, "bedrock-runtime.eu-central-1.amazonaws.com"))
    headers = dict(request.headers)
    assert "/eu-central-1/bedrock/aws4_request" in headers["authorization"]
    assert "SignedHeaders=content-type;host;x-amz-date;x-amz-security-token," in headers["authorization"]
    assert headers["x-amz-security-token"] == "team-token"
    override = AWSSigV4Credential(Credential("AWSCredentials", CREDENTIALS, region="us-west-2"))
    asyncio.run(override.apply(request, "h"))
    assert "/us-west-2/bedrock/aws4_request" in dict(request.headers)["authorization"]
    assert [name for name, _ in request.headers].count("authorization") == 1
