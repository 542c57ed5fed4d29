"""The compiled configuration the data plane reads: immutable, built once by compile.py."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from sluicegate.guardrails.engine import NO_GUARDRAILS, GuardrailConfig
from sluicegate.ratelimit.costs import CostTable
from sluicegate.ratelimit.model import RateLimitConfig
from sluicegate.upstream.policy import DEFAULT_RESILIENCE, Resilience

DEFAULT_LISTENER_PORT = 1975
DEFAULT_REQUEST_TIMEOUT = 60.0
DEFAULT_MODELS_OWNED_BY = "Envoy AI Gateway"
NO_COSTS = CostTable({})
NO_LIMITS = RateLimitConfig()


@dataclass(frozen=True, slots=True)
class Schema:
    """AIServiceBackend.spec.schema: which wire format the backend speaks."""

    name: str  # OpenAI | AzureOpenAI | ... (compile.SUPPORTED_SCHEMAS)
    version: str | None = None  # Azure api-version; Anthropic version for the Claude schemas
    prefix: str | None = None  # path prefix for OpenAI / Anthropic, default "v1"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One address of a Backend (gateway.envoyproxy.io/v1alpha1) to open connections to."""

    host: str  # FQDN or IP literal
    port: int
    tls: bool
    ca_file: str | None = None  # PEM bundle from a BackendTLSPolicy; None means system CAs
    server_name: str | None = None  # SNI and the name to verify; defaults to host


@dataclass(frozen=True, slots=True)
class Credential:
    """What a BackendSecurityPolicy puts on each upstream request."""

    type: str  # APIKey | AzureAPIKey | AnthropicAPIKey | AWSCredentials | GCPCredentials
    secret: str = field(repr=False)  # the API key; the AWS credentials file; the GCP service-account JSON
    region: str | None = None  # AWS and GCP
    profile: str | None = None  # AWS credentials-file profile; None means "default"
    project: str | None = None  # GCP projectName
    client_id: str | None = None  # AzureCredentials clientID
    tenant_id: str | None = None  # AzureCredentials tenantID
    oidc: OIDCExchange | None = None  # awsCredentials / azureCredentials oidcExchangeToken
    override: CredentialOverride | None = None  # spec.credentialOverride.fromRequestHeaders
    wif: GCPWorkloadIdentity | None = None  # gcpCredentials.workloadIdentityFederationConfig


@dataclass(frozen=True, slots=True)
class OIDCExchange:
    """An oidcExchangeToken: how to get an OIDC token (client credentials grant) to exchange."""

    issuer: str
    client_id: str
    client_secret: str = field(repr=False)
    token_endpoint: str | None = None  # None: discovered from the issuer's openid-configuration
    scopes: tuple[str, ...] = ()
    grant_type: str = "client_credentials"
    aud: str | None = None
    role_arn: str | None = None  # AWS awsRoleArn


@dataclass(frozen=True, slots=True)
class GCPWorkloadIdentity:
    """workloadIdentityFederationConfig: OIDC token -> Google STS -> optional impersonation."""

    project_id: str  # the project (number) of the workload identity pool
    pool: str
    provider: str
    oidc: OIDCExchange
    service_account: str | None = None  # serviceAccountImpersonation.serviceAccountName


@dataclass(frozen=True, slots=True)
class CredentialOverride:
    """credentialOverride.fromRequestHeaders: per-request credentials from a client header."""

    header: str | None = None  # None: the x-aigw-* default of the policy type
    fallback_to_configured: bool = True


@dataclass(frozen=True, slots=True)
class HeaderMutation:
    """Headers to set (name lower-cased, value) and to remove on the upstream request."""

    set: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BodyMutation:
    """Top-level JSON fields to set (name, parsed JSON value) and to remove."""

    set: tuple[tuple[str, Any], ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Backend:
    """A compiled AIServiceBackend with its endpoints and credential."""

    name: str  # "namespace/name" of the AIServiceBackend
    schema: Schema
    endpoints: tuple[Endpoint, ...]
    credential: Credential | None = None
    header_mutation: HeaderMutation = HeaderMutation()
    body_mutation: BodyMutation = BodyMutation()


@dataclass(frozen=True, slots=True)
class BackendRef:
    """A rule's reference to a backend; mutations are already merged (route-level wins)."""

    backend: Backend
    weight: int = 1
    priority: int = 0
    model_name_override: str | None = None
    header_mutation: HeaderMutation = HeaderMutation()
    body_mutation: BodyMutation = BodyMutation()


@dataclass(frozen=True, slots=True)
class HeaderMatch:
    """One Gateway API HTTPHeaderMatch; `name` is lower-cased."""

    name: str
    type: str  # Exact | RegularExpression
    value: str
    pattern: re.Pattern[str] | None = None  # compiled for RegularExpression, used with fullmatch

    def matches(self, headers: dict[str, str]) -> bool:
        """Whether the request headers satisfy this match."""
        actual = headers.get(self.name)
        if actual is None:
            return False
        if self.pattern is not None:
            return self.pattern.fullmatch(actual) is not None
        return actual == self.value


@dataclass(frozen=True, slots=True)
class Rule:
    """One AIGatewayRoute rule, flattened with what it needs from its route."""

    route: str  # "namespace/name" of the AIGatewayRoute
    name: str  # rules[].name, or "rule-<index>" when unnamed
    hostnames: tuple[str, ...]  # the route's hostnames; empty matches any Host
    matches: tuple[tuple[HeaderMatch, ...], ...]  # any entry matches when all its headers do; empty = all
    backend_refs: tuple[BackendRef, ...]
    request_timeout: float | None = DEFAULT_REQUEST_TIMEOUT  # seconds; None = no limit
    models_owned_by: str = DEFAULT_MODELS_OWNED_BY
    models_created_at: int = 0  # unix seconds
    resilience: Resilience = DEFAULT_RESILIENCE  # retries, timeouts, ejection, balancing

    def matches_host(self, host: str) -> bool:
        """Whether the request's Host is one of the route's hostnames."""
        return host_matches(self.hostnames, host)

    def matches_headers(self, headers: dict[str, str]) -> bool:
        """Whether any of the rule's matches accepts these (lower-cased) headers."""
        if not self.matches:
            return True
        return any(all(h.matches(headers) for h in match) for match in self.matches)


def host_matches(hostnames: tuple[str, ...], host: str) -> bool:
    """Gateway API hostname matching: exact or `*.suffix` wildcard; no hostnames matches every Host."""
    if not hostnames:
        return True
    if not host.startswith("["):
        host = host.rsplit(":", 1)[0]
    host = host.lower()
    return any(
        name == host or (name.startswith("*.") and host.endswith(name[1:]) and host != name[2:])
        for name in hostnames
    )


@dataclass(frozen=True, slots=True)
class Model:
    """An entry of GET /v1/models: an Exact x-ai-eg-model match of some rule."""

    id: str
    owned_by: str
    created: int
    hostnames: tuple[str, ...] = ()  # empty: listed for every Host


@dataclass(frozen=True, slots=True)
class AcceptedPolicy:
    """A resource accepted and kept as written, not enforced yet (BackendTrafficPolicy, GatewayConfig)."""

    kind: str
    name: str  # "namespace/name"
    file: str
    target_refs: tuple[str, ...]  # "Kind name" of each spec.targetRefs entry
    spec: Any  # the spec as written, for the issues that will enforce it


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    """Everything the data plane needs, compiled from the resources; replaced whole on reload."""

    rules: tuple[Rule, ...]
    backends: tuple[Backend, ...]
    models: tuple[Model, ...]
    listener_port: int | None = None  # the first Gateway listener's port, if any
    ignored: tuple[str, ...] = ()  # "Kind namespace/name (file)" of Kubernetes-only resources
    sources: tuple[str, ...] = ()  # files the config was read from
    policies: tuple[AcceptedPolicy, ...] = ()  # accepted, not enforced yet
    warnings: tuple[str, ...] = ()  # things that load but deserve a look (ignored or not-enforced fields)
    costs: CostTable = NO_COSTS  # llmRequestCosts per route, globalLLMRequestCosts merged in
    rate_limits: RateLimitConfig = NO_LIMITS  # BackendTrafficPolicy rateLimit rules and QuotaPolicy buckets
    guardrails: GuardrailConfig = NO_GUARDRAILS  # GuardrailPolicy rules per route (sluicegate.dev/v1alpha1)
