"""Resources from environment variables, the way Envoy AI Gateway's `aigw run` builds them with no file.

Mirrors internal/autoconfig of envoyproxy/ai-gateway v1.1: AZURE_OPENAI_API_KEY wins over OPENAI_API_KEY,
and either wins over ANTHROPIC_API_KEY. Kubernetes-only documents of the original template (GatewayClass,
EnvoyProxy, ClientTrafficPolicy) are left out, and the schema prefix is written as `prefix` (v1.1 ignores
`version` for the OpenAI schema).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from sluicegate.config.errors import ConfigError, ConfigProblem
from sluicegate.config.resources import SECURITY_TYPES
from sluicegate.config.runtime import DEFAULT_LISTENER_PORT

SOURCE = "<environment>"  # the file name problems about generated documents carry
NAME = "aigw-run"  # the Gateway and AIGatewayRoute name `aigw run` uses
AIGW_API = "aigateway.envoyproxy.io/v1beta1"


@dataclass(frozen=True, slots=True)
class AutoConfig:
    """Generated resource documents, and notes for the operator about what was (not) configured."""

    documents: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Target:
    """Where a base URL points: host or IP, port, TLS and the path prefix."""

    host: str
    is_ip: bool
    port: int
    tls: bool
    prefix: str


def _parse_url(variable: str, url: str) -> _Target:
    """Split a base URL like https://api.openai.com/v1 (ConfigError naming the variable if invalid)."""

    def fail(why: str) -> ConfigError:
        return ConfigError([ConfigProblem(SOURCE, "", variable, f"invalid base URL {url!r}: {why}")])

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise fail(f"unsupported scheme {parts.scheme!r} (use http or https)")
    if not parts.hostname:
        raise fail("missing hostname")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as err:
        raise fail(str(err)) from None
    try:
        ipaddress.ip_address(parts.hostname)
        is_ip = True
    except ValueError:
        is_ip = False
    return _Target(parts.hostname, is_ip, port, parts.scheme == "https", parts.path.strip("/"))


def _meta(name: str) -> dict[str, str]:
    """metadata in the default namespace."""
    return {"name": name, "namespace": "default"}


def _backend_documents(name: str, target: _Target) -> list[dict[str, Any]]:
    """An Envoy Gateway Backend, plus a BackendTLSPolicy with the system CAs for https."""
    endpoint = (
        {"ip": {"address": target.host, "port": target.port}}
        if target.is_ip
        else {"fqdn": {"hostname": target.host, "port": target.port}}
    )
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "gateway.envoyproxy.io/v1alpha1",
            "kind": "Backend",
            "metadata": _meta(name),
            "spec": {"endpoints": [endpoint]},
        }
    ]
    if target.tls:
        docs.append(
            {
                "apiVersion": "gateway.networking.k8s.io/v1alpha3",
                "kind": "BackendTLSPolicy",
                "metadata": _meta(f"{name}-tls"),
                "spec": {
                    "targetRefs": [{"group": "gateway.envoyproxy.io", "kind": "Backend", "name": name}],
                    "validation": {"wellKnownCACertificates": "System", "hostname": target.host},
                },
            }
        )
    return docs


def _gateway(port: int) -> dict[str, Any]:
    """The Gateway with one HTTP listener."""
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": _meta(NAME),
        "spec": {"gatewayClassName": NAME, "listeners": [{"name": "http", "protocol": "HTTP", "port": port}]},
    }


def _route(
    backend: str, matches: list[dict[str, Any]], timeout: str | None = "120s", name: str = NAME
) -> dict[str, Any]:
    """An AIGatewayRoute sending the matched requests to one AIServiceBackend."""
    rule: dict[str, Any] = {"matches": matches, "backendRefs": [{"name": backend, "namespace": "default"}]}
    if timeout:
        rule["timeouts"] = {"request": timeout}
    return {
        "apiVersion": AIGW_API,
        "kind": "AIGatewayRoute",
        "metadata": _meta(name),
        "spec": {
            "parentRefs": [{"name": NAME, "kind": "Gateway", "group": "gateway.networking.k8s.io"}],
            "rules": [rule],
        },
    }


def _any_model() -> list[dict[str, Any]]:
    """A match for every model."""
    return [{"headers": [{"type": "RegularExpression", "name": "x-ai-eg-model", "value": ".*"}]}]


def _service_backend(
    name: str, schema: dict[str, str], headers: Sequence[tuple[str, str]] = ()
) -> dict[str, Any]:
    """An AIServiceBackend pointing at the Backend of the same name."""
    ref = {"name": name, "kind": "Backend", "group": "gateway.envoyproxy.io", "namespace": "default"}
    spec: dict[str, Any] = {"schema": schema, "backendRef": ref}
    if headers:
        spec["headerMutation"] = {"set": [{"name": k, "value": v} for k, v in headers]}
    return {"apiVersion": AIGW_API, "kind": "AIServiceBackend", "metadata": _meta(name), "spec": spec}


def _credential(backend: str, secret: str, bsp_type: str, api_key: str) -> list[dict[str, Any]]:
    """A Secret with apiKey and the BackendSecurityPolicy using it."""
    sub = SECURITY_TYPES[bsp_type]  # APIKey -> apiKey, AzureAPIKey -> azureAPIKey, ...
    target = {"group": "aigateway.envoyproxy.io", "kind": "AIServiceBackend", "name": backend}
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": _meta(secret),
            "type": "Opaque",
            "stringData": {"apiKey": api_key},
        },
        {
            "apiVersion": AIGW_API,
            "kind": "BackendSecurityPolicy",
            "metadata": _meta(secret),
            "spec": {"targetRefs": [target], "type": bsp_type, sub: {"secretRef": {"name": secret}}},
        },
    ]


def _require(env: Mapping[str, str], variable: str, because: str) -> str:
    """A variable that must be set, or ConfigError."""
    value = env.get(variable, "")
    if not value:
        raise ConfigError([ConfigProblem(SOURCE, "", variable, f"is required when {because} is set")])
    return value


def _openai(env: Mapping[str, str]) -> list[dict[str, Any]]:
    """OpenAI (or any OpenAI-compatible base URL), or Azure OpenAI when AZURE_OPENAI_API_KEY is set."""
    headers = [
        (h, env[v])
        for h, v in (("OpenAI-Organization", "OPENAI_ORG_ID"), ("OpenAI-Project", "OPENAI_PROJECT_ID"))
        if env.get(v)
    ]
    if env.get("AZURE_OPENAI_API_KEY"):
        endpoint = _require(env, "AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_API_KEY")
        version = _require(env, "OPENAI_API_VERSION", "AZURE_OPENAI_API_KEY")
        target = _parse_url("AZURE_OPENAI_ENDPOINT", endpoint)
        schema = {"name": "AzureOpenAI", "version": version}
        credential = ("AzureAPIKey", "AZURE_OPENAI_API_KEY")
    else:
        target = _parse_url("OPENAI_BASE_URL", env.get("OPENAI_BASE_URL") or "https://api.openai.com/v1")
        schema, credential = {"name": "OpenAI"}, ("APIKey", "OPENAI_API_KEY")
        if target.prefix and target.prefix != "v1":
            schema["prefix"] = target.prefix
    return [
        _route("openai", _any_model()),
        *_backend_documents("openai", target),
        _service_backend("openai", schema, headers),
        *_credential("openai", "openai-apikey", credential[0], env[credential[1]]),
    ]


def _anthropic(env: Mapping[str, str]) -> list[dict[str, Any]]:
    """Anthropic's API (or ANTHROPIC_BASE_URL) with the Anthropic schema."""
    target = _parse_url("ANTHROPIC_BASE_URL", env.get("ANTHROPIC_BASE_URL") or "https://api.anthropic.com/v1")
    schema = {"name": "Anthropic"} | ({"prefix": target.prefix} if target.prefix not in ("", "v1") else {})
    return [
        _route("anthropic", _any_model()),
        *_backend_documents("anthropic", target),
        _service_backend("anthropic", schema),
        *_credential("anthropic", "anthropic-apikey", "AnthropicAPIKey", env["ANTHROPIC_API_KEY"]),
    ]


def autoconfig_documents(env: Mapping[str, str]) -> AutoConfig | None:
    """Documents for the provider the environment names; None when no provider key is set.

    Raises ConfigError when a variable is missing or malformed (e.g. Azure without OPENAI_API_VERSION).
    ANTHROPIC_API_KEY alone (with ANTHROPIC_BASE_URL if set) gives an Anthropic-schema backend.
    """
    has_openai = bool(env.get("OPENAI_API_KEY") or env.get("AZURE_OPENAI_API_KEY"))
    has_anthropic = bool(env.get("ANTHROPIC_API_KEY"))
    if not has_openai and not has_anthropic:
        return None
    notes = []
    if has_openai:
        if env.get("OPENAI_API_KEY") and env.get("AZURE_OPENAI_API_KEY"):
            notes.append("both AZURE_OPENAI_API_KEY and OPENAI_API_KEY are set: using Azure OpenAI")
        if has_anthropic:
            notes.append("ANTHROPIC_API_KEY is ignored because an OpenAI key is set (as in aigw run)")
        return AutoConfig([_gateway(DEFAULT_LISTENER_PORT), *_openai(env)], notes)
    return AutoConfig([_gateway(DEFAULT_LISTENER_PORT), *_anthropic(env)], notes)


def demo_documents(
    base_url: str, models: Sequence[str], *, api_key: str | None = None, port: int | None = None
) -> list[dict[str, Any]]:
    """Route each model (an Exact x-ai-eg-model match) to one OpenAI-schema backend at base_url.

    Used by the offline demo with the in-process fake provider; add a Gateway when port is given and
    an APIKey credential when api_key is.
    """
    target = _parse_url("base_url", base_url)
    schema = {"name": "OpenAI"} | ({"prefix": target.prefix} if target.prefix not in ("", "v1") else {})
    matches = [{"headers": [{"type": "Exact", "name": "x-ai-eg-model", "value": m}]} for m in models]
    docs = [
        _route("demo", matches, timeout=None, name="demo"),
        *_backend_documents("demo", target),
        _service_backend("demo", schema),
    ]
    if api_key is not None:
        docs += _credential("demo", "demo-apikey", "APIKey", api_key)
    return ([_gateway(port)] if port is not None else []) + docs
