"""OIDC tokens for oidcExchangeToken (client credentials grant), and AWS STS AssumeRoleWithWebIdentity.

These run only in background refreshes, so a general-purpose HTTP client (aiohttp) is fine here. TLS
verification uses the default context (honours SSL_CERT_FILE). Errors name the endpoint and the HTTP
status, never a response body, which could echo what was sent.
"""

from __future__ import annotations

import os
import ssl
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime

import aiohttp

from sluicegate.auth.refresh import CredentialFetchError
from sluicegate.config.runtime import OIDCExchange

TIMEOUT = aiohttp.ClientTimeout(total=10)
STS_NS = "{https://sts.amazonaws.com/doc/2011-06-15/}"


@dataclass(frozen=True, slots=True)
class AWSSessionCredentials:
    """Temporary AWS credentials from STS."""

    access_key: str
    secret_key: str = field(repr=False)
    session_token: str = field(repr=False)
    lifetime: float  # seconds from when they were received


def _session() -> aiohttp.ClientSession:
    """A client session verifying TLS with the default CAs (SSL_CERT_FILE read now, not at import)."""
    connector = aiohttp.TCPConnector(ssl=ssl.create_default_context())
    return aiohttp.ClientSession(timeout=TIMEOUT, connector=connector)


def _where(url: str) -> str:
    """scheme://host/path of a URL, without any query (which could carry a secret)."""
    return url.split("?", 1)[0]


async def token_endpoint(session: aiohttp.ClientSession, oidc: OIDCExchange) -> str:
    """The configured tokenEndpoint, or the one the issuer's openid-configuration names."""
    if oidc.token_endpoint:
        return oidc.token_endpoint
    url = oidc.issuer.rstrip("/") + "/.well-known/openid-configuration"
    async with session.get(url) as response:
        if response.status != 200:
            raise CredentialFetchError(f"OIDC discovery at {_where(url)} answered {response.status}")
        document = await response.json(content_type=None)
    endpoint = document.get("token_endpoint") if isinstance(document, dict) else None
    if not isinstance(endpoint, str):
        raise CredentialFetchError(f"OIDC discovery at {_where(url)} names no token_endpoint")
    return endpoint


async def oidc_token(oidc: OIDCExchange) -> tuple[str, float]:
    """(token, seconds it lives) from the issuer: the id_token if one is given, else the access_token."""
    async with _session() as session:
        url = await token_endpoint(session, oidc)
        form = {"grant_type": oidc.grant_type or "client_credentials", "client_id": oidc.client_id}
        if oidc.client_secret:
            form["client_secret"] = oidc.client_secret
        scopes = oidc.scopes or ("openid",)
        form["scope"] = " ".join(scopes)
        if oidc.aud:
            form["audience"] = oidc.aud
        async with session.post(url, data=form) as response:
            if response.status != 200:
                raise CredentialFetchError(f"OIDC token endpoint {_where(url)} answered {response.status}")
            body = await response.json(content_type=None)
    token = body.get("id_token") or body.get("access_token") if isinstance(body, dict) else None
    if not isinstance(token, str) or not token:
        raise CredentialFetchError(f"OIDC token endpoint {_where(url)} gave no token")
    return token, float(body.get("expires_in") or 3600)


def sts_endpoint(region: str | None) -> str:
    """The STS endpoint: AWS_ENDPOINT_URL_STS / AWS_ENDPOINT_URL as the AWS SDKs honour, else regional."""
    configured = os.environ.get("AWS_ENDPOINT_URL_STS") or os.environ.get("AWS_ENDPOINT_URL")
    return configured or f"https://sts.{region or 'us-east-1'}.amazonaws.com/"


async def assume_role_with_web_identity(
    role_arn: str, token: str, region: str | None, session_name: str = "sluicegate"
) -> AWSSessionCredentials:
    """STS AssumeRoleWithWebIdentity (Query API, XML answer); needs no AWS signature."""
    url = sts_endpoint(region)
    form = {
        "Action": "AssumeRoleWithWebIdentity",
        "Version": "2011-06-15",
        "RoleArn": role_arn,
        "RoleSessionName": session_name,
        "WebIdentityToken": token,
    }
    async with _session() as session:
        async with session.post(url, data=form) as response:
            text = await response.read()
            if response.status != 200:
                raise CredentialFetchError(f"STS {_where(url)} answered {response.status}")
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        raise CredentialFetchError(f"STS {_where(url)} answered with malformed XML") from None
    creds = root.find(f"{STS_NS}AssumeRoleWithWebIdentityResult/{STS_NS}Credentials")
    if creds is None:
        raise CredentialFetchError(f"STS {_where(url)} answered without Credentials")
    values = {child.tag.removeprefix(STS_NS): (child.text or "") for child in creds}
    try:
        expiration = datetime.fromisoformat(values["Expiration"].replace("Z", "+00:00")).timestamp()
        return AWSSessionCredentials(
            values["AccessKeyId"], values["SecretAccessKey"], values["SessionToken"], expiration - time.time()
        )
    except (KeyError, ValueError):
        raise CredentialFetchError(f"STS {_where(url)} answered with incomplete Credentials") from None
