"""Typed models of every accepted resource kind, parsed by hand with Envoy AI Gateway's field names."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sluicegate.config.errors import ConfigProblem
from sluicegate.config.fields import Fields, Meta, ObjectRef, Sink, read_ref, read_refs
from sluicegate.config.guardrails import GROUP as SLUICEGATE
from sluicegate.config.guardrails import GuardrailPolicy, parse_guardrail_policy
from sluicegate.config.load import RawDocument, resource_label
from sluicegate.config.ratelimit_specs import QuotaPolicy, parse_quota_policy
from sluicegate.config.routes import (
    AIGatewayRoute,
    BodyMutationSpec,
    HeaderMutationSpec,
    body_mutation,
    header_mutation,
    parse_route,
)

AIGW, EG, GWAPI, CORE = "aigateway.envoyproxy.io", "gateway.envoyproxy.io", "gateway.networking.k8s.io", ""
SCHEMAS = (
    "OpenAI",
    "Cohere",
    "AWSBedrock",
    "AzureOpenAI",
    "GCPVertexAI",
    "GCPAnthropic",
    "Anthropic",
    "AWSAnthropic",
)
SECURITY_TYPES = {  # BackendSecurityPolicy.spec.type -> the sub-object it requires
    "APIKey": "apiKey",
    "AWSCredentials": "awsCredentials",
    "AzureAPIKey": "azureAPIKey",
    "AzureCredentials": "azureCredentials",
    "GCPCredentials": "gcpCredentials",
    "AnthropicAPIKey": "anthropicAPIKey",
}


@dataclass(frozen=True, slots=True)
class AIServiceBackend:
    """aigateway.envoyproxy.io AIServiceBackend."""

    meta: Meta
    schema_name: str | None
    schema_version: str | None
    schema_prefix: str | None
    backend_ref: ObjectRef | None
    header_mutation: HeaderMutationSpec | None
    body_mutation: BodyMutationSpec | None


@dataclass(frozen=True, slots=True)
class BackendSecurityPolicy:
    """aigateway.envoyproxy.io BackendSecurityPolicy; secret_refs lists every Secret it names."""

    meta: Meta
    type: str | None
    target_refs: tuple[ObjectRef, ...]
    secret_refs: tuple[ObjectRef, ...]
    api_key_ref: ObjectRef | None  # the secretRef of apiKey / azureAPIKey / anthropicAPIKey
    has_credential_override: bool
    credentials_file_ref: ObjectRef | None = None  # aws/gcpCredentials.credentialsFile.secretRef
    region: str | None = None  # awsCredentials.region / gcpCredentials.region
    profile: str | None = None  # awsCredentials.credentialsFile.profile
    project: str | None = None  # gcpCredentials.projectName
    client_id: str | None = None  # azureCredentials.clientID
    tenant_id: str | None = None  # azureCredentials.tenantID
    client_secret_ref: ObjectRef | None = None  # azureCredentials.clientSecretRef
    oidc: OIDCSpec | None = None  # aws/azureCredentials.oidcExchangeToken
    override_header: str | None = None  # credentialOverride.fromRequestHeaders.header
    override_fallback: bool = True  # credentialOverride.fromRequestHeaders.fallbackToConfigured
    wif: WIFSpec | None = None  # gcpCredentials.workloadIdentityFederationConfig


@dataclass(frozen=True, slots=True)
class WIFSpec:
    """gcpCredentials.workloadIdentityFederationConfig as written."""

    project_id: str | None
    pool: str | None
    provider: str | None
    oidc: OIDCSpec | None
    service_account: str | None


@dataclass(frozen=True, slots=True)
class OIDCSpec:
    """An oidcExchangeToken as written: the Envoy Gateway OIDC block plus grantType, aud, awsRoleArn."""

    issuer: str | None
    token_endpoint: str | None
    client_id: str | None
    client_secret_ref: ObjectRef | None
    scopes: tuple[str, ...]
    grant_type: str | None
    aud: str | None
    role_arn: str | None


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    """Backend spec.endpoints[]: fqdn {hostname, port}, ip {address, port} or unix {path}."""

    path: str
    kind: str  # fqdn | ip | unix
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class TLSSpec:
    """What a BackendTLSPolicy (or Backend spec.tls) says about verifying the backend."""

    path: str
    ca_refs: tuple[ObjectRef, ...]
    well_known: str | None
    hostname: str | None
    insecure_skip_verify: bool = False


@dataclass(frozen=True, slots=True)
class Backend:
    """gateway.envoyproxy.io Backend."""

    meta: Meta
    type: str
    endpoints: tuple[EndpointSpec, ...]
    tls: TLSSpec | None


@dataclass(frozen=True, slots=True)
class BackendTLSPolicy:
    """gateway.networking.k8s.io BackendTLSPolicy."""

    meta: Meta
    target_refs: tuple[ObjectRef, ...]
    tls: TLSSpec


@dataclass(frozen=True, slots=True)
class Gateway:
    """gateway.networking.k8s.io Gateway: only the listener ports matter here."""

    meta: Meta
    ports: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class SecretData:
    """A v1 Secret (data base64-decoded, stringData winning) or a v1 ConfigMap."""

    meta: Meta
    data: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class RawPolicy:
    """A resource accepted and kept as written (BackendTrafficPolicy, GatewayConfig): not enforced yet."""

    meta: Meta
    target_refs: tuple[ObjectRef, ...]
    spec: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Ignored:
    """A Kubernetes-only resource, accepted and listed as ignored."""

    meta: Meta


Resource = (
    AIGatewayRoute
    | AIServiceBackend
    | BackendSecurityPolicy
    | Backend
    | BackendTLSPolicy
    | Gateway
    | SecretData
    | RawPolicy
    | QuotaPolicy
    | GuardrailPolicy
    | Ignored
)


def parse_service_backend(meta: Meta, spec: Fields) -> AIServiceBackend:
    """AIServiceBackend spec."""
    schema = spec.mapping("schema", required=True)
    name = version = prefix = None
    if schema is not None:
        name = schema.text("name", required=True, choices=SCHEMAS)
        version, prefix = schema.text("version"), schema.text("prefix")
        schema.done()
    ref = spec.mapping("backendRef", required=True)
    backend_ref = read_ref(ref, "port") if ref is not None else None
    out = AIServiceBackend(
        meta,
        name,
        version,
        prefix,
        backend_ref,
        header_mutation(spec.mapping("headerMutation")),
        body_mutation(spec.mapping("bodyMutation")),
    )
    spec.done(
        {
            "backendSecurityPolicyRef": "removed in Envoy AI Gateway v0.4: "
            "use BackendSecurityPolicy spec.targetRefs instead"
        }
    )
    return out


def _secret_ref(f: Fields | None, key: str) -> ObjectRef | None:
    """A secretRef-like field of f."""
    sub = f.mapping(key, required=True) if f is not None else None
    return read_ref(sub) if sub is not None else None


def _oidc(sub: Fields, role: bool = False) -> OIDCSpec | None:
    """oidcExchangeToken: oidc{provider{issuer, tokenEndpoint}, clientID, clientSecret, scopes}, ..."""
    f = sub.mapping("oidcExchangeToken")
    if f is None:
        return None
    oidc = f.mapping("oidc", required=True)
    issuer = token_endpoint = client_id = secret_ref = None
    scopes: list[str] = []
    if oidc is not None:
        if (provider := oidc.mapping("provider", required=True)) is not None:
            issuer = provider.text("issuer", required=True)
            token_endpoint = provider.text("tokenEndpoint")
            provider.accept("authorizationEndpoint", "endSessionEndpoint", "backendRefs", "backendRef")
            provider.accept("backendSettings")
            provider.done()
        client_id = oidc.text("clientID", required=True)
        secret_ref = _secret_ref(oidc, "clientSecret")
        scopes = oidc.texts("scopes")
        oidc.accept("resources", "redirectURL", "logoutPath", "forwardAccessToken", "defaultTokenTTL")
        oidc.accept("refreshToken", "defaultRefreshTokenTTL", "cookieNames", "cookieDomain", "cookieConfig")
        oidc.accept("clientIDRef", "denyRedirect", "passThroughAuthHeader", "csrfTokenTTL")
        oidc.accept("disableTokenEncryption")
        oidc.done()
    grant_type, aud = f.text("grantType"), f.text("aud")
    role_arn = f.text("awsRoleArn", required=True) if role else None
    f.done()
    return OIDCSpec(issuer, token_endpoint, client_id, secret_ref, tuple(scopes), grant_type, aud, role_arn)


def parse_security_policy(meta: Meta, spec: Fields) -> BackendSecurityPolicy:
    """BackendSecurityPolicy spec: targetRefs, type and the one matching sub-object."""
    targets = read_refs(spec, "targetRefs", "sectionName")
    kind = spec.text("type", required=True, choices=tuple(SECURITY_TYPES))
    secrets: list[ObjectRef] = []
    api_key_ref = file_ref = region = profile = project = None
    client_id = tenant_id = client_secret_ref = oidc = wif = None
    for type_name, key in SECURITY_TYPES.items():
        sub = spec.mapping(key)
        if sub is None:
            if type_name == kind:
                spec.sink.add(spec.at(key), f"is required when type is {kind}")
            continue
        if type_name != kind:
            spec.sink.add(spec.at(key), f"must not be set when type is {kind}")
        if key in ("apiKey", "azureAPIKey", "anthropicAPIKey"):
            api_key_ref = ref = _secret_ref(sub, "secretRef")
            secrets.extend([ref] if ref else [])
        elif key == "awsCredentials":
            region = sub.text("region", required=True)
            if (cred := sub.mapping("credentialsFile")) is not None:
                file_ref = _secret_ref(cred, "secretRef")
                secrets.extend([file_ref] if file_ref else [])
                profile = cred.text("profile")
                cred.done()
            oidc = _oidc(sub, role=True)
        elif key == "azureCredentials":
            client_id = sub.text("clientID", required=True)
            tenant_id = sub.text("tenantID", required=True)
            if (secret := sub.mapping("clientSecretRef")) is not None:
                client_secret_ref = read_ref(secret)
                secrets.extend([client_secret_ref] if client_secret_ref else [])
            oidc = _oidc(sub)
            if (client_secret_ref is None) == (oidc is None):
                sub.sink.add(sub.path, "exactly one of clientSecretRef or oidcExchangeToken must be set")
        else:
            project = sub.text("projectName", required=True)
            region = sub.text("region", required=True)
            if (cred := sub.mapping("credentialsFile")) is not None:
                file_ref = _secret_ref(cred, "secretRef")
                secrets.extend([file_ref] if file_ref else [])
                cred.done()
            if (w := sub.mapping("workloadIdentityFederationConfig")) is not None:
                account = None
                if (imp := w.mapping("serviceAccountImpersonation")) is not None:
                    account = imp.text("serviceAccountName", required=True)
                    imp.done()
                wif = WIFSpec(
                    w.text("projectID", required=True),
                    w.text("workloadIdentityPoolName", required=True),
                    w.text("workloadIdentityProviderName", required=True),
                    _oidc(w),
                    account,
                )
                if wif.oidc is None:
                    w.sink.add(w.at("oidcExchangeToken"), "is required")
                w.done()
                if file_ref is not None:
                    sub.sink.add(sub.path, "only one of credentialsFile or workloadIdentityFederationConfig")
        sub.done()
    override_header, override_fallback = None, True
    if wif is not None and wif.oidc is not None:
        oidc = wif.oidc
    if oidc is not None and oidc.client_secret_ref is not None:
        secrets.append(oidc.client_secret_ref)
    override = (over := spec.mapping("credentialOverride")) is not None
    if over is not None:
        if (headers := over.mapping("fromRequestHeaders")) is not None:
            override_header = headers.text("header")
            override_fallback = headers.flag("fallbackToConfigured") is not False
            headers.done()
        elif over.accept("fromDynamicMetadata") is not None:
            over.sink.unsupported(over.at("fromDynamicMetadata"), "credentialOverride.fromDynamicMetadata")
        else:
            over.sink.add(over.path, "exactly one of fromRequestHeaders or fromDynamicMetadata must be set")
        over.done()
    spec.done()
    return BackendSecurityPolicy(
        meta,
        kind,
        targets,
        tuple(secrets),
        api_key_ref,
        override,
        file_ref,
        region,
        profile,
        project,
        client_id,
        tenant_id,
        client_secret_ref,
        oidc,
        override_header,
        override_fallback,
        wif,
    )


def _tls(f: Fields, hostname_key: str) -> TLSSpec:
    """caCertificateRefs / wellKnownCACertificates / hostname (or sni) of a TLS validation block."""
    ca_refs = read_refs(f, "caCertificateRefs")
    well_known = f.text("wellKnownCACertificates")
    if well_known is not None and well_known not in ("System", ""):
        f.sink.add(f.at("wellKnownCACertificates"), f'"{well_known}" is not one of: System')
    if ca_refs and well_known:
        f.sink.add(f.at("wellKnownCACertificates"), "must not be set together with caCertificateRefs")
    return TLSSpec(f.path, ca_refs, well_known or None, f.text(hostname_key))


def parse_backend(meta: Meta, spec: Fields) -> Backend:
    """Envoy Gateway Backend spec."""
    kind = spec.text("type", choices=("Endpoints", "DynamicResolver")) or "Endpoints"
    endpoints = []
    for item in spec.mappings("endpoints", required=kind == "Endpoints"):
        given = [k for k in ("fqdn", "ip", "unix") if item.data.get(k) is not None]
        if len(given) != 1:
            item.sink.add(item.path, "exactly one of fqdn, ip or unix must be set")
        for key, host_key in (("fqdn", "hostname"), ("ip", "address"), ("unix", "path")):
            if (sub := item.mapping(key)) is None:
                continue
            host = sub.text(host_key, required=True)
            port = sub.integer("port", required=True, low=1, high=65535) if key != "unix" else 0
            sub.done()
            if host and port is not None:
                endpoints.append(EndpointSpec(item.path, key, host, port))
        item.accept("zone", "hostname")
        item.done()
    tls = None
    if (sub := spec.mapping("tls")) is not None:
        tls = _tls(sub, "sni")
        insecure = bool(sub.flag("insecureSkipVerify"))
        tls = TLSSpec(tls.path, tls.ca_refs, tls.well_known, tls.hostname, insecure)
        sub.accept(
            "clientCertificateRef",
            "minVersion",
            "maxVersion",
            "ciphers",
            "ecdhCurves",
            "signatureAlgorithms",
            "alpnProtocols",
        )
        sub.done()
    spec.accept("appProtocols", "fallback")
    spec.done()
    return Backend(meta, kind, tuple(endpoints), tls)


def parse_tls_policy(meta: Meta, spec: Fields) -> BackendTLSPolicy:
    """Gateway API BackendTLSPolicy spec."""
    targets = read_refs(spec, "targetRefs", "sectionName", required=True)
    validation = spec.mapping("validation", required=True)
    tls = TLSSpec("spec.validation", (), None, None)
    if validation is not None:
        tls = _tls(validation, "hostname")
        validation.accept("subjectAltNames")
        validation.done()
    spec.accept("options")
    spec.done()
    return BackendTLSPolicy(meta, targets, tls)


def parse_gateway(meta: Meta, spec: Fields) -> Gateway:
    """Gateway API Gateway spec: listeners[].port."""
    spec.text("gatewayClassName")
    ports = []
    for listener in spec.mappings("listeners"):
        listener.text("name")
        if (port := listener.integer("port", required=True, low=1, high=65535)) is not None:
            ports.append(port)
        protocol = listener.text("protocol")
        if protocol not in (None, "HTTP"):
            listener.sink.unsupported(listener.at("protocol"), f"listener protocol {protocol}")
        listener.accept("hostname", "tls", "allowedRoutes")
        listener.done()
    spec.accept("addresses", "infrastructure", "backendTLS", "allowedListeners", "tls", "defaultScope")
    spec.done()
    return Gateway(meta, tuple(ports))


def parse_traffic_policy(meta: Meta, spec: Fields) -> RawPolicy:
    """BackendTrafficPolicy: targetRefs are read; the rest is kept as written for later."""
    targets = read_refs(spec, "targetRefs", "sectionName")
    spec.accept(*spec.data)
    return RawPolicy(meta, targets, dict(spec.data))


def parse_gateway_config(meta: Meta, spec: Fields) -> RawPolicy:
    """GatewayConfig: kept as written (extProc is Kubernetes-only; the rest is not enforced yet)."""
    spec.accept("extProc", "globalLLMRequestCosts", "forwardProxy")
    spec.done()
    return RawPolicy(meta, (), dict(spec.data))


_Parser = Callable[[Meta, Fields], Resource]
# (group, kind) -> (accepted versions, parser of spec)
SUPPORTED: dict[tuple[str, str], tuple[frozenset[str], _Parser | None]] = {
    (AIGW, "AIGatewayRoute"): (frozenset({"v1beta1", "v1alpha1"}), parse_route),
    (AIGW, "AIServiceBackend"): (frozenset({"v1beta1", "v1alpha1"}), parse_service_backend),
    (AIGW, "BackendSecurityPolicy"): (frozenset({"v1beta1", "v1alpha1"}), parse_security_policy),
    (AIGW, "GatewayConfig"): (frozenset({"v1beta1", "v1alpha1"}), parse_gateway_config),
    (AIGW, "QuotaPolicy"): (frozenset({"v1alpha1"}), parse_quota_policy),
    (SLUICEGATE, "GuardrailPolicy"): (frozenset({"v1alpha1"}), parse_guardrail_policy),
    (EG, "Backend"): (frozenset({"v1alpha1"}), parse_backend),
    (EG, "BackendTrafficPolicy"): (frozenset({"v1alpha1"}), parse_traffic_policy),
    (GWAPI, "Gateway"): (frozenset({"v1", "v1beta1"}), parse_gateway),
    (GWAPI, "BackendTLSPolicy"): (frozenset({"v1", "v1alpha3"}), parse_tls_policy),
    (CORE, "Secret"): (frozenset({"v1"}), None),
    (CORE, "ConfigMap"): (frozenset({"v1"}), None),
}
UNSUPPORTED_KINDS = {(AIGW, "MCPRoute")}
# Kinds that only mean something inside Kubernetes: accepted in any version and listed as ignored.
IGNORED_KINDS: dict[str, frozenset[str] | None] = {  # group -> kinds (None: every kind of the group)
    CORE: frozenset(
        {
            "Namespace",
            "Service",
            "ServiceAccount",
            "Pod",
            "Endpoints",
            "PersistentVolumeClaim",
            "PersistentVolume",
            "ResourceQuota",
            "LimitRange",
        }
    ),
    GWAPI: frozenset(
        {
            "GatewayClass",
            "HTTPRoute",
            "GRPCRoute",
            "TLSRoute",
            "TCPRoute",
            "UDPRoute",
            "ReferenceGrant",
            "ListenerSet",
        }
    ),
    EG: frozenset(
        {
            "EnvoyProxy",
            "ClientTrafficPolicy",
            "SecurityPolicy",
            "HTTPRouteFilter",
            "EnvoyExtensionPolicy",
            "EnvoyPatchPolicy",
        }
    ),
    "inference.networking.k8s.io": None,
    "inference.networking.x-k8s.io": None,
    "apps": None,
    "batch": None,
    "rbac.authorization.k8s.io": None,
    "policy": None,
    "autoscaling": None,
    "networking.k8s.io": None,
    "apiextensions.k8s.io": None,
    "admissionregistration.k8s.io": None,
}
_TOP = frozenset({"apiVersion", "kind", "metadata", "spec", "status"})


def _secret(meta: Meta, f: Fields) -> SecretData:
    """v1 Secret (base64 data + stringData) or ConfigMap (data)."""
    data: dict[str, str] = {}
    sink = f.sink
    raw = f.mapping("data")
    for key, value in (raw.data if raw else {}).items():
        if meta.kind == "ConfigMap":
            data[str(key)] = value if isinstance(value, str) else str(value)
            continue
        try:
            data[str(key)] = base64.b64decode(str(value), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            sink.add(f"data.{key}", "is not valid base64 text (use stringData for plain text)")
    if raw is not None:
        raw.accept(*raw.data)
    string_data = f.mapping("stringData") if meta.kind == "Secret" else None
    for key, value in (string_data.data if string_data else {}).items():
        data[str(key)] = value if isinstance(value, str) else str(value)
    if string_data is not None:
        string_data.accept(*string_data.data)
    f.accept("type", "immutable", "binaryData")
    return SecretData(meta, data)


def parse_document(doc: RawDocument, problems: list[ConfigProblem]) -> Resource | None:
    """Validate one raw document into a typed resource; problems are appended (None when unusable)."""
    sink = Sink(doc.file, resource_label(doc.data), problems)
    top = Fields(doc.data, "", sink)
    api_version, kind = top.text("apiVersion", required=True), top.text("kind", required=True)
    metadata = top.mapping("metadata", required=True)
    if not api_version or not kind or metadata is None:
        return None
    name = metadata.text("name", required=True)
    namespace = metadata.text("namespace") or "default"
    created = metadata.data.get("creationTimestamp")
    annotations = metadata.data.get("annotations")
    annotations = annotations if isinstance(annotations, dict) else {}
    if not name:
        return None
    meta = Meta(kind, name, namespace, doc.file, created if isinstance(created, str) else None, annotations)
    group, _, version = api_version.rpartition("/")
    if group in IGNORED_KINDS and (IGNORED_KINDS[group] is None or kind in IGNORED_KINDS[group]):
        return Ignored(meta)
    if (group, kind) in UNSUPPORTED_KINDS:
        sink.unsupported("kind", f"{kind}")
        return None
    entry = SUPPORTED.get((group, kind))
    if entry is None:
        sink.add("kind", f"unknown kind {kind} in apiVersion {api_version}")
        return None
    versions, parser = entry
    if version not in versions:
        sink.add(
            "apiVersion",
            f"{api_version} is not accepted for {kind} (use "
            + " or ".join(f"{group}/{v}" if group else v for v in sorted(versions))
            + ")",
        )
        return None
    if parser is None:
        resource = _secret(meta, top)
    else:
        spec = top.mapping("spec", required=True)
        resource = parser(meta, spec or Fields({}, "spec", sink))
    top.accept("status")
    top.known.update(_TOP if parser else {"apiVersion", "kind", "metadata"})
    top.done()
    return resource
