"""Fake identity services speaking the real protocols, for credential tests and the offline demo.

One aiohttp app serves, over plain HTTP:
- an OIDC issuer: `GET /oidc/.well-known/openid-configuration`, `POST /oidc/token` (client credentials grant,
  answers a JWT-shaped `id_token` and `access_token`);
- AWS STS: `POST /sts/` with `Action=AssumeRoleWithWebIdentity` (Query API form, XML answer);
- Google STS: `POST /google-sts/v1/token` (RFC 8693 token exchange of an OIDC token), and IAM credentials
  `POST /iamcredentials/v1/projects/-/serviceAccounts/{email}:generateAccessToken` (impersonation);
and over HTTPS (azure-identity refuses plain http) with a trustme certificate for localhost/127.0.0.1:
- Azure Entra ID: `GET /{tenant}/v2.0/.well-known/openid-configuration`, `POST /{tenant}/oauth2/v2.0/token`
  (client_secret or client_assertion), answering `access_token` with `expires_in`.
`IdentityState` says what was issued and how long it lives, and makes every endpoint fail on demand.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import ssl
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

STS_XML = """<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <Credentials>
      <AccessKeyId>{key_id}</AccessKeyId>
      <SecretAccessKey>{secret}</SecretAccessKey>
      <SessionToken>{token}</SessionToken>
      <Expiration>{expiration}</Expiration>
    </Credentials>
    <AssumedRoleUser><Arn>{role}/sluicegate</Arn><AssumedRoleId>AROAFAKE:sluicegate</AssumedRoleId></AssumedRoleUser>
    <SubjectFromWebIdentityToken>fake-subject</SubjectFromWebIdentityToken>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata><RequestId>00000000-0000-0000-0000-000000000000</RequestId></ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>
"""
STS_ERROR = """<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>
  <RequestId>00000000-0000-0000-0000-000000000000</RequestId>
</ErrorResponse>
"""


@dataclass
class IdentityState:
    """What the fake identity services accept, issue and remember."""

    client_id: str = "sluicegate-client"
    client_secret: str = "oidc-client-s3cret"
    azure_client_secret: str = "azure-client-s3cret"
    lifetime: int = 3600  # seconds every issued token or credential lives
    failing: bool = False  # every token endpoint answers 500 while set
    oidc_tokens: list[str] = field(default_factory=list)
    azure_tokens: list[str] = field(default_factory=list)
    google_sts_tokens: list[str] = field(default_factory=list)
    google_tokens: list[str] = field(default_factory=list)  # service-account tokens (impersonation)
    aws_credentials: dict[str, tuple[str, str]] = field(default_factory=dict)  # key id -> (secret, token)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)  # (path, form)
    _counter: itertools.count = field(default_factory=lambda: itertools.count(1))

    def next(self) -> int:
        """A fresh serial number."""
        return next(self._counter)


def _jwt(claims: dict[str, Any]) -> str:
    """An unsigned JWT-shaped token (the fakes check it by value, not by signature)."""

    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}.sig"


class FakeIdentity:
    """The fake identity services on two loopback ports (HTTP and HTTPS), on their own thread."""

    def __init__(self, server_context: ssl.SSLContext | None = None) -> None:
        self.state = IdentityState()
        self.server_context = server_context
        self.http_url = ""
        self.https_url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    def app(self) -> web.Application:
        """The aiohttp application."""
        app = web.Application()
        app.router.add_get("/oidc/.well-known/openid-configuration", self._oidc_discovery)
        app.router.add_post("/oidc/token", self._oidc_token)
        app.router.add_post("/sts/", self._sts)
        app.router.add_post("/google-sts/v1/token", self._google_sts)
        app.router.add_post(
            "/iamcredentials/v1/projects/-/serviceAccounts/{account}:generateAccessToken", self._generate
        )
        app.router.add_get("/{tenant}/v2.0/.well-known/openid-configuration", self._entra_discovery)
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self._entra_token)
        return app

    def start(self) -> FakeIdentity:
        """Serve on free loopback ports until stop()."""
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def serve() -> None:
            self._runner = web.AppRunner(self.app())
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            self.http_url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
            if self.server_context is not None:
                tls = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.server_context)
                await tls.start()
                self.https_url = f"https://localhost:{tls._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]

        def main() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(serve())
            ready.set()
            loop.run_forever()
            assert self._runner is not None
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=main, name="sluicegate-fake-identity", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        """Stop serving and join the thread."""
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = self._thread = None

    def __enter__(self) -> FakeIdentity:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _form(self, request: web.Request) -> dict[str, str]:
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.state.requests.append((request.path, form))
        return form

    async def _oidc_discovery(self, request: web.Request) -> web.Response:
        base = f"{request.scheme}://{request.host}/oidc"
        return web.json_response({"issuer": base, "token_endpoint": base + "/token"})

    async def _oidc_token(self, request: web.Request) -> web.Response:
        form = await self._form(request)
        s = self.state
        if s.failing:
            return web.json_response({"error": "temporarily_unavailable"}, status=500)
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        if (form.get("client_id"), form.get("client_secret")) != (s.client_id, s.client_secret):
            return web.json_response({"error": "invalid_client"}, status=401)
        now = int(time.time())
        claims = {"iss": "fake-oidc", "sub": s.client_id, "aud": form.get("audience", s.client_id)}
        token = _jwt({**claims, "iat": now, "exp": now + s.lifetime, "n": s.next()})
        s.oidc_tokens.append(token)
        body = {"access_token": token, "id_token": token, "token_type": "Bearer", "expires_in": s.lifetime}
        return web.json_response(body)

    async def _sts(self, request: web.Request) -> web.Response:
        form = await self._form(request)
        s = self.state
        if s.failing:
            return web.Response(status=500, text=STS_ERROR.format(code="ServiceUnavailable", message="down"))
        if form.get("Action") != "AssumeRoleWithWebIdentity" or not form.get("RoleArn"):
            return web.Response(status=400, text=STS_ERROR.format(code="InvalidAction", message="bad"))
        if form.get("WebIdentityToken") not in s.oidc_tokens:
            text = STS_ERROR.format(code="InvalidIdentityToken", message="unknown token")
            return web.Response(status=400, text=text, content_type="text/xml")
        n = s.next()
        key_id, secret, token = f"ASIAFAKE{n:012d}", f"fake-sts-secret-{n}", f"fake-session-token-{n}"
        s.aws_credentials[key_id] = (secret, token)
        expiration = datetime.fromtimestamp(time.time() + s.lifetime, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = STS_XML.format(
            key_id=key_id, secret=secret, token=token, expiration=expiration, role=form["RoleArn"]
        )
        return web.Response(text=body, content_type="text/xml")

    async def _google_sts(self, request: web.Request) -> web.Response:
        form = await self._form(request)
        s = self.state
        if s.failing:
            return web.json_response({"error": "temporarily_unavailable"}, status=500)
        if (
            form.get("grant_type") != "urn:ietf:params:oauth:grant-type:token-exchange"
            or form.get("subject_token_type") != "urn:ietf:params:oauth:token-type:jwt"
            or not form.get("audience", "").startswith("//iam.googleapis.com/projects/")
        ):
            return web.json_response({"error": "invalid_request"}, status=400)
        if form.get("subject_token") not in s.oidc_tokens:
            return web.json_response({"error": "invalid_grant"}, status=400)
        token = f"ya29.sts-{s.next()}"
        s.google_sts_tokens.append(token)
        return web.json_response(
            {
                "access_token": token,
                "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                "token_type": "Bearer",
                "expires_in": s.lifetime,
            }
        )

    async def _generate(self, request: web.Request) -> web.Response:
        s = self.state
        body = await request.json()
        s.requests.append((request.path, {"scope": " ".join(body.get("scope", []))}))
        if s.failing:
            return web.json_response({"error": {"code": 503, "status": "UNAVAILABLE"}}, status=503)
        if request.headers.get("authorization", "").removeprefix("Bearer ") not in s.google_sts_tokens:
            return web.json_response({"error": {"code": 401, "status": "UNAUTHENTICATED"}}, status=401)
        token = f"ya29.sa-{request.match_info['account']}-{s.next()}"
        s.google_tokens.append(token)
        expire = datetime.fromtimestamp(time.time() + s.lifetime, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return web.json_response({"accessToken": token, "expireTime": expire})

    async def _entra_discovery(self, request: web.Request) -> web.Response:
        tenant = request.match_info["tenant"]
        base = f"https://{request.host}/{tenant}"
        return web.json_response(
            {
                "issuer": f"{base}/v2.0",
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "tenant_region_scope": "NA",
            }
        )

    async def _entra_token(self, request: web.Request) -> web.Response:
        form = await self._form(request)
        s = self.state
        if s.failing:
            return web.json_response({"error": "temporarily_unavailable"}, status=500)
        secret_ok = form.get("client_secret") == s.azure_client_secret
        assertion_ok = form.get("client_assertion") in s.oidc_tokens and form.get(
            "client_assertion_type", ""
        ).endswith("jwt-bearer")
        if form.get("grant_type") != "client_credentials" or not (secret_ok or assertion_ok):
            body = {"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret."}
            return web.json_response(body, status=401)
        token = f"entra-{s.next()}"
        s.azure_tokens.append(token)
        return web.json_response(
            {
                "token_type": "Bearer",
                "expires_in": s.lifetime,
                "ext_expires_in": s.lifetime,
                "access_token": token,
            }
        )
