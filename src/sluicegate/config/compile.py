"""Resources → one immutable RuntimeConfig: resolve references, merge mutations, check support."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sluicegate.config import resources as r
from sluicegate.config.errors import ConfigError, ConfigProblem
from sluicegate.config.fields import Meta, ObjectRef, Sink, parse_rfc3339
from sluicegate.config.guardrails import GuardrailPolicy, compile_guardrails, moderation_check
from sluicegate.config.load import RawDocument, read_documents
from sluicegate.config.ratelimit_specs import QuotaPolicy
from sluicegate.config.ratelimits import compile_limits
from sluicegate.config.resilience import compile_resilience
from sluicegate.config.routes import AIGatewayRoute, BodyMutationSpec, HeaderMutationSpec
from sluicegate.config.runtime import (
    DEFAULT_MODELS_OWNED_BY,
    DEFAULT_REQUEST_TIMEOUT,
    AcceptedPolicy,
    Backend,
    BackendRef,
    BodyMutation,
    Credential,
    CredentialOverride,
    Endpoint,
    GCPWorkloadIdentity,
    HeaderMatch,
    HeaderMutation,
    Model,
    OIDCExchange,
    Rule,
    RuntimeConfig,
    Schema,
)

SUPPORTED_SCHEMAS = {"OpenAI", "AzureOpenAI", "Cohere", "Anthropic", "AWSBedrock", "AWSAnthropic"}
SUPPORTED_SCHEMAS |= {"GCPVertexAI", "GCPAnthropic"}
SUPPORTED_SECURITY_TYPES = {
    "APIKey",
    "AzureAPIKey",
    "AnthropicAPIKey",
    "AWSCredentials",
    "AzureCredentials",
    "GCPCredentials",
}
CLIENT_SECRET_KEY = "client-secret"  # Secret key of azureCredentials.clientSecretRef and OIDC clientSecret
MODEL_HEADER = "x-ai-eg-model"
API_KEY_IN_SECRET = "apiKey"  # the Secret key Envoy AI Gateway reads for all three API-key types
CREDENTIALS_FILE_KEYS = {  # the Secret key Envoy AI Gateway reads for each credentials file
    "AWSCredentials": "credentials",
    "GCPCredentials": "service_account.json",
}
CA_IN_SECRET = "ca.crt"
_DEFAULT_VERSIONS = {"GCPAnthropic": "vertex-2023-10-16", "AWSAnthropic": "bedrock-2023-05-31"}
_ENV_ANNOTATION, _FILE_ANNOTATION = "substitution.aigw.run/env/", "substitution.aigw.run/file/"
_INFERENCE_POOL = ("inference.networking.k8s.io", "InferencePool")

Key = tuple[str, str, str]  # (kind, namespace, name)


def _merge_headers(backend: HeaderMutationSpec | None, route: HeaderMutationSpec | None) -> HeaderMutation:
    """Backend-level then route-level header mutation; route-level wins per header name."""
    sets = dict(backend.set if backend else ())
    sets.update(route.set if route else ())
    removes = dict.fromkeys((*(backend.remove if backend else ()), *(route.remove if route else ())))
    return HeaderMutation(tuple(sets.items()), tuple(removes))


def _merge_bodies(backend: BodyMutationSpec | None, route: BodyMutationSpec | None) -> BodyMutation:
    """Backend-level then route-level body mutation; route-level wins per field."""
    sets = dict(backend.set if backend else ())
    sets.update(route.set if route else ())
    removes = dict.fromkeys((*(backend.remove if backend else ()), *(route.remove if route else ())))
    return BodyMutation(tuple(sets.items()), tuple(removes))


def write_ca_file(pem: str) -> str:
    """Write a CA bundle to a content-addressed file in the temp dir (reused across reloads); its path."""
    folder = Path(tempfile.gettempdir()) / f"sluicegate-{os.getuid() if hasattr(os, 'getuid') else 'ca'}"
    folder.mkdir(mode=0o700, exist_ok=True)
    path = folder / f"ca-{hashlib.sha256(pem.encode()).hexdigest()[:24]}.pem"
    if not path.exists() or path.read_text() != pem:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(pem)
        tmp.replace(path)
    return str(path)


class _Compiler:
    """One compilation: the resource index, the problems and the warnings found."""

    def __init__(self, env: Mapping[str, str], problems: list[ConfigProblem]) -> None:
        self.env = env
        self.problems = problems
        self.warnings: list[str] = []
        self.index: dict[Key, r.Resource] = {}
        self.order: list[r.Resource] = []
        self.resolved: dict[Key, dict[str, str]] = {}

    def sink(self, meta: Meta) -> Sink:
        """Where problems about a resource go."""
        return Sink(meta.file, meta.label, self.problems)

    def warn(self, meta: Meta, field: str, message: str) -> None:
        """Record a warning in the same format as problems."""
        self.warnings.append(str(ConfigProblem(meta.file, meta.label, field, message)))

    def add(self, doc: RawDocument) -> None:
        """Parse and index one document."""
        resource = r.parse_document(doc, self.problems)
        if resource is None:
            return
        meta = resource.meta
        key = (meta.kind, meta.namespace, meta.name)
        if key in self.index:
            other = self.index[key].meta.file
            self.sink(meta).add("metadata.name", f"duplicate: {meta.label} is also defined in {other}")
            return
        self.index[key] = resource
        self.order.append(resource)

    def of(self, cls: type[Any]) -> list[Any]:
        """Every indexed resource of one model class, in load order."""
        return [res for res in self.order if isinstance(res, cls)]

    def lookup(self, sink: Sink, field: str, kind: str, namespace: str, name: str) -> Any:
        """The resource named, or None after recording a "not found" problem."""
        found = self.index.get((kind, namespace, name))
        if found is None:
            sink.add(field, f"{kind} {namespace}/{name} not found")
        return found

    def secret_value(self, sink: Sink, ref: ObjectRef, owner: Meta, key: str) -> str | None:
        """One key of a Secret (or ConfigMap, when ref.kind says so), recording what is missing."""
        kind = ref.kind if ref.kind in ("Secret", "ConfigMap") else "Secret"
        secret = self.lookup(sink, f"{ref.path}.name", kind, ref.namespace or owner.namespace, ref.name)
        if secret is None:
            return None
        value = self.resolve_secrets(secret).get(key)
        if value is None:
            sink.add(f"{ref.path}.name", f"{secret.meta.label} has no key {key}")
        return value

    def resolve_secrets(self, secret: r.SecretData) -> dict[str, str]:
        """The data of a Secret after aigw's substitution.aigw.run/{env,file}/<key> annotations."""
        key = (secret.meta.kind, secret.meta.namespace, secret.meta.name)
        if key in self.resolved:
            return self.resolved[key]
        data = dict(secret.data)
        annotations = secret.meta.annotations or {}
        for name in data:
            if (var := annotations.get(_ENV_ANNOTATION + name)) is not None:
                if var in self.env:
                    data[name] = self.env[var]
                else:
                    self.sink(secret.meta).add(
                        f'metadata.annotations["{_ENV_ANNOTATION}{name}"]',
                        f"environment variable {var} is not set",
                    )
            elif (file := annotations.get(_FILE_ANNOTATION + name)) is not None:
                try:
                    data[name] = Path(os.path.expanduser(file)).read_text()
                except OSError as err:
                    self.sink(secret.meta).add(
                        f'metadata.annotations["{_FILE_ANNOTATION}{name}"]', f"cannot read {file}: {err}"
                    )
        self.resolved[key] = data
        return data

    def credentials(self) -> dict[Key, Credential | None]:
        """AIServiceBackend key → the credential of the one BackendSecurityPolicy that targets it."""
        out: dict[Key, Credential | None] = {}
        owner: dict[Key, str] = {}
        for bsp in self.of(r.BackendSecurityPolicy):
            sink, meta = self.sink(bsp.meta), bsp.meta
            if bsp.type and bsp.type not in SUPPORTED_SECURITY_TYPES:
                sink.unsupported("spec.type", f"BackendSecurityPolicy type {bsp.type}")
            credential = None
            file_key = CREDENTIALS_FILE_KEYS.get(bsp.type or "")
            tokens = bsp.type in ("AWSCredentials", "AzureCredentials") or bsp.wif is not None
            if tokens and bsp.credentials_file_ref is None:
                credential = self.token_credential(sink, bsp)
            elif file_key and bsp.type in SUPPORTED_SECURITY_TYPES:
                if bsp.credentials_file_ref is None:
                    where = f"spec.{r.SECURITY_TYPES[bsp.type]}"
                    sink.unsupported(where, f"{bsp.type} without credentialsFile")
                elif (text := self.secret_value(sink, bsp.credentials_file_ref, meta, file_key)) is not None:
                    credential = Credential(bsp.type, text, bsp.region, bsp.profile, bsp.project)
            for ref in bsp.secret_refs:
                if ref is bsp.credentials_file_ref or ref is bsp.client_secret_ref:
                    continue
                if ref is not bsp.api_key_ref:
                    self.lookup(sink, f"{ref.path}.name", "Secret", ref.namespace or meta.namespace, ref.name)
                    continue
                value = self.secret_value(sink, ref, meta, API_KEY_IN_SECRET)
                if value is not None and not value.strip():
                    sink.add(f"{ref.path}.name", f"key {API_KEY_IN_SECRET} of Secret {ref.name} is empty")
                elif value is not None and bsp.type in SUPPORTED_SECURITY_TYPES:
                    credential = Credential(bsp.type, value.strip())
            if bsp.has_credential_override and credential is not None:
                override = CredentialOverride(bsp.override_header, bsp.override_fallback)
                credential = dataclasses.replace(credential, override=override)
            for target in bsp.target_refs:
                if (target.group, target.kind) == _INFERENCE_POOL:
                    sink.unsupported(target.path, "targeting an InferencePool")
                    continue
                if (target.group, target.kind) != (r.AIGW, "AIServiceBackend"):
                    sink.add(target.path, f"must target group {r.AIGW} kind AIServiceBackend")
                    continue
                key = ("AIServiceBackend", meta.namespace, target.name)
                if self.lookup(sink, f"{target.path}.name", *key) is None:
                    continue
                if key in owner:
                    sink.add(
                        f"{target.path}.name",
                        f"AIServiceBackend {meta.namespace}/{target.name} is "
                        f"already targeted by BackendSecurityPolicy {owner[key]}",
                    )
                    continue
                owner[key], out[key] = meta.ref, credential
        return out

    def token_credential(self, sink: Sink, bsp: r.BackendSecurityPolicy) -> Credential | None:
        """AWSCredentials without a file (OIDC exchange or the default chain) and AzureCredentials."""
        meta, oidc, secret = bsp.meta, None, ""
        if (spec := bsp.oidc) is not None:
            client_secret = ""
            if spec.client_secret_ref is not None:
                value = self.secret_value(sink, spec.client_secret_ref, meta, CLIENT_SECRET_KEY)
                if value is None:
                    return None
                client_secret = value.strip()
            oidc = OIDCExchange(
                spec.issuer or "",
                spec.client_id or "",
                client_secret,
                spec.token_endpoint,
                spec.scopes,
                spec.grant_type or "client_credentials",
                spec.aud,
                spec.role_arn,
            )
        elif bsp.client_secret_ref is not None:
            value = self.secret_value(sink, bsp.client_secret_ref, meta, CLIENT_SECRET_KEY)
            if value is None:
                return None
            secret = value.strip()
        elif bsp.type == "AzureCredentials":
            return None  # the parser reported that one of the two is required
        wif = None
        if bsp.wif is not None and oidc is not None:
            w = bsp.wif
            account = w.service_account
            wif = GCPWorkloadIdentity(w.project_id or "", w.pool or "", w.provider or "", oidc, account)
            oidc = None
        return Credential(
            bsp.type or "",
            secret,
            bsp.region,
            project=bsp.project,
            client_id=bsp.client_id,
            tenant_id=bsp.tenant_id,
            oidc=oidc,
            wif=wif,
        )

    def tls_specs(self) -> dict[Key, tuple[r.TLSSpec, Meta]]:
        """Backend key → the BackendTLSPolicy validation that targets it."""
        out: dict[Key, tuple[r.TLSSpec, Meta]] = {}
        for policy in self.of(r.BackendTLSPolicy):
            sink, meta = self.sink(policy.meta), policy.meta
            for target in policy.target_refs:
                if (target.group, target.kind) != (r.EG, "Backend"):
                    self.warn(
                        meta,
                        target.path,
                        f"targets {target.kind} {target.name}, which Sluicegate "
                        f"ignores; only group {r.EG} kind Backend is used",
                    )
                    continue
                key = ("Backend", meta.namespace, target.name)
                if self.lookup(sink, f"{target.path}.name", *key) is None:
                    continue
                if key in out:
                    sink.add(
                        f"{target.path}.name",
                        f"Backend {meta.namespace}/{target.name} is already "
                        f"targeted by BackendTLSPolicy {out[key][1].ref}",
                    )
                    continue
                out[key] = (policy.tls, meta)
        return out

    def ca_file(self, tls: r.TLSSpec, owner: Meta) -> str | None:
        """The CA bundle file of a TLS spec (None: system CAs)."""
        if not tls.ca_refs:
            return None
        sink, pems = self.sink(owner), []
        for ref in tls.ca_refs:
            if ref.kind not in ("ConfigMap", "Secret"):
                sink.add(f"{ref.path}.kind", "must be ConfigMap or Secret")
                continue
            pem = self.secret_value(sink, ref, owner, CA_IN_SECRET)
            if pem is not None and "-----BEGIN CERTIFICATE-----" not in pem:
                sink.add(f"{ref.path}.name", f"{ref.kind} {ref.name}: {CA_IN_SECRET} has no PEM certificate")
            elif pem is not None:
                pems.append(pem.strip() + "\n")
        return write_ca_file("".join(pems)) if pems else None

    def endpoints(self) -> dict[Key, tuple[Endpoint, ...]]:
        """Backend key → its endpoints, TLS decided by BackendTLSPolicy, spec.tls or port 443."""
        policies, out = self.tls_specs(), {}
        for backend in self.of(r.Backend):
            sink, meta = self.sink(backend.meta), backend.meta
            if backend.type != "Endpoints":
                sink.unsupported("spec.type", f"Backend type {backend.type}")
            tls, owner = policies.get(("Backend", meta.namespace, meta.name), (backend.tls, meta))
            if tls is not None and tls.insecure_skip_verify:
                sink.unsupported("spec.tls.insecureSkipVerify", "insecureSkipVerify")
            ca_file = self.ca_file(tls, owner) if tls is not None else None
            eps = []
            for ep in backend.endpoints:
                if ep.kind == "unix":
                    sink.unsupported(f"{ep.path}.unix", "a unix socket endpoint")
                    continue
                secure = tls is not None or ep.port == 443
                eps.append(Endpoint(ep.host, ep.port, secure, ca_file, tls.hostname if tls else None))
            out[("Backend", meta.namespace, meta.name)] = tuple(eps)
        return out

    def backends(self) -> dict[Key, tuple[Backend, r.AIServiceBackend]]:
        """AIServiceBackend key → (compiled Backend, its resource)."""
        credentials, endpoints, out = self.credentials(), self.endpoints(), {}
        for asb in self.of(r.AIServiceBackend):
            sink, meta = self.sink(asb.meta), asb.meta
            name = asb.schema_name or "OpenAI"
            if asb.schema_name and name not in SUPPORTED_SCHEMAS:
                sink.unsupported("spec.schema.name", f"schema {name}")
            prefix = version = None
            if name in ("OpenAI", "Anthropic"):
                prefix = (asb.schema_prefix or "v1").strip("/")
                if asb.schema_version:
                    self.warn(
                        meta,
                        "spec.schema.version",
                        f"is ignored for the {name} schema (as in Envoy "
                        "AI Gateway v1.1); set spec.schema.prefix instead, "
                        f'e.g. prefix: "{asb.schema_version}"',
                    )
            else:
                version = asb.schema_version or _DEFAULT_VERSIONS.get(name)
                if name == "AzureOpenAI" and not version:
                    self.warn(
                        meta,
                        "spec.schema.version",
                        "is not set: Azure OpenAI needs an api-version, e.g. 2025-01-01-preview",
                    )
            eps: tuple[Endpoint, ...] = ()
            ref = asb.backend_ref
            if ref is not None and (ref.group, ref.kind) != (r.EG, "Backend"):
                sink.add(
                    ref.path,
                    f"must be group {r.EG} kind Backend (Kubernetes Services are not "
                    "supported, see envoyproxy/ai-gateway#902)",
                )
            elif ref is not None:
                key = ("Backend", ref.namespace or meta.namespace, ref.name)
                if self.lookup(sink, f"{ref.path}.name", *key) is not None:
                    eps = endpoints.get(key, ())
            key = ("AIServiceBackend", meta.namespace, meta.name)
            backend = Backend(
                meta.ref,
                Schema(name, version, prefix),
                eps,
                credentials.get(key),
                _merge_headers(asb.header_mutation, None),
                _merge_bodies(asb.body_mutation, None),
            )
            out[key] = (backend, asb)
        return out

    def rules(self, backends: dict[Key, tuple[Backend, r.AIServiceBackend]]) -> list[Rule]:
        """Every AIGatewayRoute rule, flattened."""
        out = []
        for route in self.of(AIGatewayRoute):
            sink, meta = self.sink(route.meta), route.meta
            created_default = 0
            if meta.creation_timestamp:
                try:
                    created_default = parse_rfc3339(meta.creation_timestamp)
                except ValueError as err:
                    sink.add("metadata.creationTimestamp", str(err))
            for i, rule in enumerate(route.rules):
                refs = []
                for ref in rule.backend_refs:
                    if ref.group or ref.kind:
                        if (ref.group, ref.kind) == _INFERENCE_POOL:
                            sink.unsupported(ref.path, "a backendRef to an InferencePool")
                        else:
                            sink.add(
                                ref.path,
                                "group and kind may only name inference.networking.k8s.io "
                                "InferencePool; leave them out for an AIServiceBackend",
                            )
                        continue
                    ns = ref.namespace or meta.namespace
                    found = backends.get(("AIServiceBackend", ns, ref.name))
                    if found is None:
                        sink.add(f"{ref.path}.name", f"AIServiceBackend {ns}/{ref.name} not found")
                        continue
                    backend, asb = found
                    refs.append(
                        BackendRef(
                            backend,
                            ref.weight,
                            ref.priority,
                            ref.model_name_override,
                            _merge_headers(asb.header_mutation, ref.header_mutation),
                            _merge_bodies(asb.body_mutation, ref.body_mutation),
                        )
                    )
                if not rule.backend_refs:
                    self.warn(meta, f"{rule.path}.backendRefs", "is empty: matching requests will fail")
                for path in rule.extra_timeouts:
                    self.warn(meta, path, "accepted, not enforced yet")
                timeout = DEFAULT_REQUEST_TIMEOUT
                if rule.has_request_timeout:
                    timeout = rule.request_timeout or None  # "0s" means no limit
                matches = tuple(
                    tuple(HeaderMatch(h.name, h.type, h.value, h.pattern) for h in m) for m in rule.matches
                )
                owned_by = DEFAULT_MODELS_OWNED_BY if rule.models_owned_by is None else rule.models_owned_by
                created = created_default if rule.models_created_at is None else rule.models_created_at
                out.append(
                    Rule(
                        meta.ref,
                        rule.name or f"rule-{i}",
                        route.hostnames,
                        matches,
                        tuple(refs),
                        timeout,
                        owned_by,
                        created,
                    )
                )
        return out

    def compile(self, sources: Sequence[str]) -> RuntimeConfig:
        """Build the RuntimeConfig; raise ConfigError when anything is wrong."""
        backends = self.backends()
        rules = self.rules(backends)
        resilience = compile_resilience(
            self.sink, self.warn, self.of(AIGatewayRoute), self.of(r.RawPolicy), rules
        )
        rules = resilience.rules
        models: dict[tuple[str, tuple[str, ...]], Model] = {}
        for rule in rules:
            for match in rule.matches:
                for h in match:
                    if h.type == "Exact" and h.name == MODEL_HEADER:
                        key = (h.value, rule.hostnames)
                        models.setdefault(
                            key, Model(h.value, rule.models_owned_by, rule.models_created_at, rule.hostnames)
                        )
        gateways = self.of(r.Gateway)
        ports = [(gw, port) for gw in gateways for port in gw.ports]
        if len(ports) > 1:
            self.warn(
                ports[0][0].meta,
                "spec.listeners",
                f"only the first listener (port {ports[0][1]}) is "
                f"used; {len(ports) - 1} more listener(s) are ignored",
            )
        limits = compile_limits(
            self.sink,
            self.of(AIGatewayRoute),
            gateways,
            self.of(r.RawPolicy),
            self.of(QuotaPolicy),
            {b.name: b for b, _ in backends.values()},
        )
        policies = []
        for res in self.of(r.RawPolicy):
            if (res.meta.kind, res.meta.ref) in limits.enforced | resilience.enforced:
                continue
            targets = tuple(f"{t.kind} {t.name}" for t in res.target_refs)
            policies.append(AcceptedPolicy(res.meta.kind, res.meta.ref, res.meta.file, targets, res.spec))
        guardrails = compile_guardrails(
            self.sink,
            self.of(GuardrailPolicy),
            {route.meta.ref for route in self.of(AIGatewayRoute)},
            lambda sink, policy, spec: moderation_check(self, sink, policy, spec, backends),
        )
        if self.problems:
            raise ConfigError(self.problems)
        return RuntimeConfig(
            rules=tuple(rules),
            backends=tuple(b for b, _ in backends.values()),
            models=tuple(models.values()),
            listener_port=ports[0][1] if ports else None,
            ignored=tuple(f"{i.meta.label} ({i.meta.file})" for i in self.of(r.Ignored)),
            sources=tuple(dict.fromkeys(sources)),
            policies=tuple(policies),
            warnings=tuple(self.warnings),
            costs=limits.costs,
            rate_limits=limits.limits,
            guardrails=guardrails,
        )


def compile_resources(
    docs: Iterable[RawDocument | Mapping[str, Any]],
    *,
    env: Mapping[str, str] | None = None,
    source: str = "<generated>",
    sources: Sequence[str] | None = None,
    problems: Sequence[ConfigProblem] = (),
) -> RuntimeConfig:
    """Validate and compile documents (RawDocuments from files, or plain dicts labelled `source`).

    Raises ConfigError with every problem found (plus the `problems` passed in, e.g. from loading).
    """
    compiler = _Compiler(os.environ if env is None else env, list(problems))
    files: list[str] = []
    for i, doc in enumerate(docs):
        raw = doc if isinstance(doc, RawDocument) else RawDocument(source, i, 0, dict(doc))
        files.append(raw.file)
        compiler.add(raw)
    return compiler.compile(files if sources is None else sources)


def load_config(paths: Sequence[str], env: Mapping[str, str] | None = None) -> RuntimeConfig:
    """Read, validate and compile YAML files/folders; ConfigError lists every problem found."""
    result = read_documents(paths, env)
    return compile_resources(result.documents, env=env, sources=result.files, problems=result.problems)
