"""GCPCredentials: tokens from the fake token endpoint, refreshed in the background, the path prefix."""

from __future__ import annotations

import asyncio
import json

import pytest

from harness import free_port
from sluicegate.auth import credential_provider
from sluicegate.auth.gcp import GCPCredential, gcp_credential
from sluicegate.config.runtime import Credential
from sluicegate.core.errors import GatewayError
from sluicegate.testing import FakeProviderThread
from sluicegate.testing.fake_gemini import service_account_info, state
from sluicegate.translate.base import UpstreamRequest


def credential(
    token_uri: str, region: str | None = "us-central1", project: str | None = "proj"
) -> Credential:
    return Credential("GCPCredentials", json.dumps(service_account_info(token_uri)), region, None, project)


def upstream() -> UpstreamRequest:
    target = "/publishers/google/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    return UpstreamRequest(
        "POST", target, [("content-type", "application/json"), ("authorization", "x")], b"{}"
    )


def test_first_request_waits_for_the_first_token(fake: FakeProviderThread) -> None:
    async def main() -> UpstreamRequest:
        provider = GCPCredential(credential(fake.base_url + "/token"))  # starts fetching right away
        request = upstream()
        await provider.apply(request, "127.0.0.1")
        provider.close()
        return request

    request = asyncio.run(main())
    assert request.target == (
        "/v1/projects/proj/locations/us-central1/publishers/google/models/"
        "gemini-2.5-flash:streamGenerateContent?alt=sse"
    )
    auth = [value for name, value in request.headers if name == "authorization"]
    assert len(auth) == 1 and auth[0].startswith("Bearer ya29.fake-")
    assert auth[0][7:] in state(fake.provider).tokens


def test_refreshed_ahead_of_expiry_in_the_background(fake: FakeProviderThread) -> None:
    async def main() -> tuple[str, str, int]:
        # tokens that live 2 s are fetched again at half their life, well before they expire
        state(fake.provider).token_lifetime = 2
        provider = GCPCredential(credential(fake.base_url + "/token"))
        await provider.start()
        assert provider.refresher is not None
        first = provider.refresher.value
        for _ in range(200):  # no request comes in meanwhile: the refresh is not on any request's path
            if provider.fetches >= 2:
                break
            await asyncio.sleep(0.05)
        request = upstream()
        await provider.apply(request, "127.0.0.1")
        provider.close()
        state(fake.provider).token_lifetime = 3600
        assert first is not None
        return first, dict(request.headers)["authorization"], provider.fetches

    first, header, fetches = asyncio.run(main())
    assert fetches >= 2
    assert header != f"Bearer {first}" and header.startswith("Bearer ya29.fake-")


def test_token_endpoint_down_is_a_502_without_secrets() -> None:
    async def main() -> GatewayError:
        provider = GCPCredential(credential(f"http://127.0.0.1:{free_port()}/token"), first_token_wait=5)
        with pytest.raises(GatewayError) as caught:
            await provider.apply(upstream(), "127.0.0.1")
        provider.close()
        return caught.value

    error = asyncio.run(main())
    assert error.status == 502
    assert "/token" in error.message and "PRIVATE KEY" not in error.message and "BEGIN" not in error.message


@pytest.mark.parametrize(
    ("secret", "region", "reason"),
    [
        (
            '{"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----\\nxyz',
            "r",
            "JSONDecodeError",
        ),
        ('{"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----\\nxyz"}', "r", "Error"),
        ("{}", None, "projectName and region are required"),
    ],
)
def test_unusable_service_account_never_shows_the_key(secret: str, region: str | None, reason: str) -> None:
    async def main() -> GatewayError:
        provider = GCPCredential(Credential("GCPCredentials", secret, region, None, "p"))
        with pytest.raises(GatewayError) as caught:
            await provider.apply(upstream(), "127.0.0.1")
        return caught.value

    error = asyncio.run(main())
    assert error.status == 502 and reason in error.message
    assert "xyz" not in error.message and "PRIVATE" not in error.message
    assert "xyz" not in repr(Credential("GCPCredentials", secret))


def test_providers_are_shared_per_credential_and_loop(fake: FakeProviderThread) -> None:
    cred = credential(fake.base_url + "/token")

    async def main() -> None:
        one = credential_provider(cred)
        assert credential_provider(cred) is one  # a config reload keeps the warm token
        assert isinstance(one, GCPCredential) and "ya29" not in repr(one)
        assert gcp_credential(credential(fake.base_url + "/token", region="europe-west4")) is not one
        one.close()

    asyncio.run(main())
