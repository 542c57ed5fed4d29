"""`sluicegate check`'s summary of a compiled config: listener, rules, backends, limits; never a secret."""

from __future__ import annotations

from sluicegate.config.guardrails import describe as describe_guardrails
from sluicegate.config.ratelimits import describe as describe_limits
from sluicegate.config.resilience import describe as describe_resilience
from sluicegate.config.runtime import DEFAULT_LISTENER_PORT, Endpoint, RuntimeConfig
from sluicegate.upstream.policy import DEFAULT_RESILIENCE


def _duration(seconds: float | None) -> str:
    """60.0 → "60s"; None → "no limit"."""
    if seconds is None:
        return "no limit"
    return f"{seconds:g}s" if seconds >= 1 else f"{seconds * 1000:g}ms"


def _endpoint(ep: Endpoint) -> str:
    """https://host:port (+ TLS details)."""
    text = f"{'https' if ep.tls else 'http'}://{ep.host}:{ep.port}"
    extras = [f"SNI {ep.server_name}"] if ep.server_name and ep.server_name != ep.host else []
    extras += [f"CA {ep.ca_file}"] if ep.ca_file else []
    return text + (f" ({', '.join(extras)})" if extras else "")


def summarize(config: RuntimeConfig) -> str:
    """A short human summary for `sluicegate check` (never shows secret values)."""
    lines = [f"sources: {', '.join(config.sources) or '(none)'}"]
    if config.listener_port is None:
        lines.append(f"listener: port {DEFAULT_LISTENER_PORT} (default; no Gateway listener configured)")
    else:
        lines.append(f"listener: port {config.listener_port}")
    lines.append(f"routes: {len(config.rules)} rule(s)")
    for rule in config.rules:
        hosts = f" [hosts: {', '.join(rule.hostnames)}]" if rule.hostnames else ""
        when = (
            " | ".join(
                " & ".join(f"{h.name} {'=' if h.type == 'Exact' else '~'} {h.value}" for h in m)
                for m in rule.matches
            )
            or "any request"
        )
        lines.append(f"  {rule.route} {rule.name}{hosts}: {when} (timeout {_duration(rule.request_timeout)})")
        if rule.resilience is not DEFAULT_RESILIENCE:
            lines.append(f"    {describe_resilience(rule.resilience)}")
        for ref in rule.backend_refs:
            extra = f", model → {ref.model_name_override}" if ref.model_name_override else ""
            extra += ", header mutation" if ref.header_mutation.set or ref.header_mutation.remove else ""
            extra += ", body mutation" if ref.body_mutation.set or ref.body_mutation.remove else ""
            lines.append(f"    → {ref.backend.name} (weight {ref.weight}, priority {ref.priority}{extra})")
    lines.append(f"backends: {len(config.backends)}")
    for b in config.backends:
        schema = b.schema.name + (f" prefix /{b.schema.prefix}" if b.schema.prefix is not None else "")
        schema += f" version {b.schema.version}" if b.schema.version else ""
        cred = f"credential {b.credential.type}" if b.credential else "no credential"
        eps = ", ".join(_endpoint(ep) for ep in b.endpoints) or "no endpoints"
        lines.append(f"  {b.name}: {schema}; {eps}; {cred}")
    if config.models:
        lines.append(
            "models: "
            + ", ".join(m.id + (f" [{', '.join(m.hostnames)}]" if m.hostnames else "") for m in config.models)
        )
    lines += describe_limits(config.costs, config.rate_limits)
    lines += describe_guardrails(config.guardrails)
    if config.policies:
        lines.append("accepted, not enforced yet:")
        lines += [f"  {p.kind} {p.name} ({p.file})" for p in config.policies]
    if config.ignored:
        lines.append("ignored (Kubernetes-only):")
        lines += [f"  {item}" for item in config.ignored]
    if config.warnings:
        lines.append("warnings:")
        lines += [f"  {w}" for w in config.warnings]
    return "\n".join(lines)
