"""Compiling resources into a RuntimeConfig: references, merges, defaults, TLS, summaries, examples."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from sluicegate.config.compile import compile_resources, load_config
from sluicegate.config.errors import ConfigError
from sluicegate.config.runtime import DEFAULT_REQUEST_TIMEOUT, RuntimeConfig
from sluicegate.config.summary import summarize

FIXTURES = Path(__file__).parent / "fixtures"
EXAMPLES = FIXTURES / "envoy-ai-gateway"
FULL = str(FIXTURES / "full.yaml")


@pytest.fixture(scope="module")
def full() -> RuntimeConfig:
    """The compiled fixtures/full.yaml."""
    return load_config([FULL], env={})


def test_listener_port_and_sources(full: RuntimeConfig) -> None:
    assert full.listener_port == 8080
    assert full.sources == (FULL,)


def test_rules_are_flattened_with_route_data(full: RuntimeConfig) -> None:
    assert [(r.route, r.name) for r in full.rules] == [
        ("ai/main", "chat"),
        ("ai/main", "rule-1"),
        ("ai/main", "rule-2"),
    ]
    chat = full.rules[0]
    assert chat.hostnames == ("api.example.com", "*.example.org")
    assert chat.request_timeout == 90.0
    assert full.rules[1].request_timeout is None  # "0s" means no limit
    assert full.rules[2].request_timeout == DEFAULT_REQUEST_TIMEOUT
    assert (chat.models_owned_by, chat.models_created_at) == ("acme", 1735689600)
    unnamed = full.rules[1]
    assert (unnamed.models_owned_by, unnamed.models_created_at) == ("Envoy AI Gateway", 1704164645)


def test_header_matches(full: RuntimeConfig) -> None:
    chat, regex = full.rules[0], full.rules[1]
    assert [[(h.name, h.type, h.value) for h in m] for m in chat.matches] == [
        [("x-ai-eg-model", "Exact", "gpt-4o-mini")],
        [("x-ai-eg-model", "Exact", "gpt-4o"), ("x-tenant", "Exact", "blue")],
    ]
    assert chat.matches_headers({"x-ai-eg-model": "gpt-4o", "x-tenant": "blue"})
    assert not chat.matches_headers({"x-ai-eg-model": "gpt-4o"})
    assert regex.matches[0][0].pattern is not None
    assert regex.matches_headers({"x-ai-eg-model": "llama-3"})
    assert not regex.matches_headers({"x-ai-eg-model": "my-llama-3"})  # full match, as in Envoy


def test_backend_refs_merge_mutations_route_level_wins(full: RuntimeConfig) -> None:
    openai, azure = full.rules[0].backend_refs
    assert (openai.backend.name, openai.weight, openai.priority) == ("ai/openai", 3, 0)
    assert openai.model_name_override == "gpt-4o-mini-2024-07-18"
    assert dict(openai.header_mutation.set) == {"x-team": "route", "x-backend-only": "yes"}
    assert set(openai.header_mutation.remove) == {"x-secret", "x-debug"}
    assert dict(openai.body_mutation.set) == {"service_tier": "flex", "user": {"id": 1}, "max_tokens": 256}
    assert (azure.backend.name, azure.weight, azure.priority) == ("other/azure", 1, 1)
    assert azure.model_name_override is None
    assert azure.header_mutation.set == () and azure.body_mutation.set == ()


def test_backends(full: RuntimeConfig) -> None:
    backends = {b.name: b for b in full.backends}
    assert list(backends) == ["ai/openai", "ai/local", "other/azure"]
    openai, local, azure = backends["ai/openai"], backends["ai/local"], backends["other/azure"]
    assert (openai.schema.name, openai.schema.prefix, openai.schema.version) == ("OpenAI", "v1", None)
    assert dict(openai.header_mutation.set) == {"x-team": "backend", "x-backend-only": "yes"}
    assert local.schema.prefix == "compat/v1"
    assert (azure.schema.name, azure.schema.version, azure.schema.prefix) == (
        "AzureOpenAI",
        "2025-01-01-preview",
        None,
    )


def test_credentials_come_from_secrets_and_are_trimmed(full: RuntimeConfig) -> None:
    backends = {b.name: b for b in full.backends}
    assert (backends["ai/openai"].credential.type, backends["ai/openai"].credential.secret) == (
        "APIKey",
        "sk-openai-test",
    )
    assert (backends["other/azure"].credential.type, backends["other/azure"].credential.secret) == (
        "AzureAPIKey",
        "azure-test",
    )
    assert backends["ai/local"].credential is None
    assert "sk-openai-test" not in repr(backends["ai/openai"])


def test_endpoints_and_tls(full: RuntimeConfig) -> None:
    backends = {b.name: b for b in full.backends}
    (openai,) = backends["ai/openai"].endpoints
    assert (openai.host, openai.port, openai.tls, openai.ca_file, openai.server_name) == (
        "api.openai.com",
        443,
        True,
        None,
        None,
    )  # port 443 without a policy: TLS, system CAs
    assert [(e.host, e.port, e.tls) for e in backends["ai/local"].endpoints] == [
        ("127.0.0.1", 8000, False),
        ("127.0.0.2", 8000, False),
    ]
    (azure,) = backends["other/azure"].endpoints
    assert (azure.tls, azure.server_name) == (True, "azure.internal")
    assert azure.ca_file is not None
    assert "MIIBfakefakefake" in Path(azure.ca_file).read_text()


def test_models_are_exact_model_matches_deduplicated(full: RuntimeConfig) -> None:
    assert [(m.id, m.owned_by, m.created, m.hostnames) for m in full.models] == [
        ("gpt-4o-mini", "acme", 1735689600, ("api.example.com", "*.example.org")),
        ("gpt-4o", "acme", 1735689600, ("api.example.com", "*.example.org")),
    ]


def test_ignored_and_accepted_policies(full: RuntimeConfig) -> None:
    assert full.ignored == (f"GatewayClass default/gw ({FULL})", f"Role ai/reader ({FULL})")
    assert full.policies == ()  # the BackendTrafficPolicy's retry is enforced (config/resilience.py)
    assert {rule.resilience.retry.num_retries for rule in full.rules if rule.route == "ai/main"} == {2}


def test_summary_lists_everything_but_secrets(full: RuntimeConfig) -> None:
    text = summarize(full)
    for expected in (
        "listener: port 8080",
        "ai/main chat",
        "x-ai-eg-model = gpt-4o-mini",
        "→ ai/openai (weight 3, priority 0, model → gpt-4o-mini-2024-07-18",
        "→ other/azure (weight 1, priority 1)",
        "x-ai-eg-model ~ llama-.*",
        "timeout no limit",
        "ai/openai: OpenAI prefix /v1; https://api.openai.com:443; credential APIKey",
        "other/azure: AzureOpenAI version 2025-01-01-preview",
        "SNI azure.internal",
        "models: gpt-4o-mini [api.example.com, *.example.org]",
        "resilience: retries 2",
        "ignored (Kubernetes-only):",
        "GatewayClass default/gw",
    ):
        assert expected in text, expected
    assert "sk-openai-test" not in text and "azure-test" not in text


def test_plain_dict_documents_compile() -> None:
    aigw = "aigateway.envoyproxy.io/v1beta1"
    docs = [
        {
            "apiVersion": aigw,
            "kind": "AIGatewayRoute",
            "metadata": {"name": "r"},
            "spec": {"rules": [{"backendRefs": [{"name": "b"}]}]},
        },
        {
            "apiVersion": aigw,
            "kind": "AIServiceBackend",
            "metadata": {"name": "b"},
            "spec": {
                "schema": {"name": "OpenAI"},
                "backendRef": {"name": "b", "kind": "Backend", "group": "gateway.envoyproxy.io"},
            },
        },
        {
            "apiVersion": "gateway.envoyproxy.io/v1alpha1",
            "kind": "Backend",
            "metadata": {"name": "b"},
            "spec": {"endpoints": [{"fqdn": {"hostname": "localhost", "port": 8000}}]},
        },
    ]
    config = compile_resources(docs, source="<test>")
    assert config.listener_port is None
    assert config.sources == ("<test>",)
    assert config.rules[0].matches == () and config.rules[0].matches_headers({})
    assert config.models == ()


def test_secret_annotations_substitute_from_env_and_file(tmp_path: Path) -> None:
    key_file = tmp_path / "key.txt"
    key_file.write_text("from-file\n")
    text = (
        (FIXTURES / "full.yaml")
        .read_text()
        .replace(
            "  name: openai-key\n  namespace: ai\ntype: Opaque\n",
            "  name: openai-key\n  namespace: ai\n  annotations:\n"
            f"    substitution.aigw.run/file/apiKey: {key_file}\ntype: Opaque\n",
        )
        .replace(
            "  name: azure-key\n  namespace: other\ntype: Opaque\n",
            "  name: azure-key\n  namespace: other\n  annotations:\n"
            "    substitution.aigw.run/env/apiKey: AZURE_KEY_FOR_TEST\ntype: Opaque\n",
        )
    )
    path = tmp_path / "full.yaml"
    path.write_text(text)
    backends = {b.name: b for b in load_config([str(path)], env={"AZURE_KEY_FOR_TEST": "env-key"}).backends}
    assert backends["ai/openai"].credential.secret == "from-file"
    assert backends["other/azure"].credential.secret == "env-key"
    with pytest.raises(ConfigError, match="environment variable AZURE_KEY_FOR_TEST is not set"):
        load_config([str(path)], env={})


def test_warnings_for_fields_that_load_but_do_nothing(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    path.write_text(
        textwrap.dedent("""\
        apiVersion: aigateway.envoyproxy.io/v1beta1
        kind: AIGatewayRoute
        metadata: {name: r}
        spec:
          llmRequestCosts: [{metadataKey: llm_input_token, type: InputToken}]
          rules:
            - backendRefs: [{name: a}, {name: o}]
              streamIdleTimeout: 10s
        ---
        apiVersion: aigateway.envoyproxy.io/v1beta1
        kind: AIServiceBackend
        metadata: {name: a}
        spec:
          schema: {name: AzureOpenAI}
          backendRef: {name: b, kind: Backend, group: gateway.envoyproxy.io}
        ---
        apiVersion: aigateway.envoyproxy.io/v1beta1
        kind: AIServiceBackend
        metadata: {name: o}
        spec:
          schema: {name: OpenAI, version: api/v1}
          backendRef: {name: b, kind: Backend, group: gateway.envoyproxy.io}
        ---
        apiVersion: gateway.envoyproxy.io/v1alpha1
        kind: Backend
        metadata: {name: b}
        spec:
          endpoints: [{fqdn: {hostname: example.com, port: 443}}]
        """)
    )
    config = load_config([str(path)], env={})
    warnings = "\n".join(config.warnings)
    assert "streamIdleTimeout" not in warnings  # enforced (config/resilience.py)
    assert config.rules[0].resilience.stream_idle_timeout == 10.0
    assert "AIServiceBackend default/a: spec.schema.version: is not set" in warnings
    assert "AIServiceBackend default/o: spec.schema.version: is ignored for the OpenAI schema" in warnings
    assert "warnings:" in summarize(config)


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "many.yaml"
    path.write_text(
        textwrap.dedent("""\
        apiVersion: aigateway.envoyproxy.io/v1beta1
        kind: AIGatewayRoute
        metadata: {name: r}
        spec:
          rules:
            - backendRefs: [{name: a}, {name: b}]
              timeouts: {request: forever}
        ---
        apiVersion: example.com/v1
        kind: Widget
        metadata: {name: w}
        """)
    )
    with pytest.raises(ConfigError) as err:
        load_config([str(path)], env={})
    fields = [p.field for p in err.value.problems]
    assert fields == [
        "spec.rules[0].timeouts.request",
        "kind",
        "spec.rules[0].backendRefs[0].name",
        "spec.rules[0].backendRefs[1].name",
    ]
    assert not err.value.only_unsupported


# --- Envoy AI Gateway v1.1 examples, unchanged ---------------------------------------------------------

EXAMPLE_FILES = sorted(p.relative_to(EXAMPLES).as_posix() for p in EXAMPLES.glob("*/*.yaml"))
COMPILES_FULLY = {
    "basic/basic.yaml",
    "basic/openai.yaml",
    "basic/tars.yaml",
    "basic/anthropic.yaml",
    "basic/anthropic-openai-local.yaml",
    "basic/aws.yaml",
    "basic/aws-irsa.yaml",
    "basic/aws-pod-identity.yaml",
    "basic/azure_openai.yaml",
    "basic/aws-bedrock-openai-anthropic.yaml",
    "basic/cohere.yaml",
    "basic/gcp_vertex.yaml",
    "provider_fallback/base.yaml",
    "provider_fallback/fallback.yaml",
    "token_ratelimit/token_ratelimit.yaml",
}
COMPANIONS = {"basic/anthropic-openai-local.yaml": ["basic/openai.yaml"]}  # see the fixtures' README.md


@pytest.mark.parametrize("name", EXAMPLE_FILES)
def test_envoy_ai_gateway_example_loads(name: str) -> None:
    paths = [str(EXAMPLES / name)] + [str(EXAMPLES / c) for c in COMPANIONS.get(name, [])]
    try:
        config = load_config(paths, env={})
    except ConfigError as err:
        assert name not in COMPILES_FULLY, str(err)
        assert err.only_unsupported, str(err)
        for problem in err.problems:
            assert problem.message.endswith("is not supported yet")
        return
    assert name in COMPILES_FULLY
    assert summarize(config)


def test_the_openai_example_compiles_fully() -> None:
    config = load_config([str(EXAMPLES / "basic/basic.yaml"), str(EXAMPLES / "basic/openai.yaml")], env={})
    assert config.listener_port == 80
    assert [m.id for m in config.models] == ["some-cool-self-hosted-model", "gpt-4o-mini"]
    backend = config.rules[1].backend_refs[0].backend
    assert (backend.name, backend.schema.name, backend.credential.type) == (
        "default/envoy-ai-gateway-basic-openai",
        "OpenAI",
        "APIKey",
    )
    (endpoint,) = backend.endpoints
    assert (endpoint.host, endpoint.port, endpoint.tls, endpoint.server_name, endpoint.ca_file) == (
        "api.openai.com",
        443,
        True,
        "api.openai.com",
        None,
    )
    assert "GatewayClass default/envoy-ai-gateway-basic" in config.ignored[0]


def test_provider_fallback_folder_keeps_the_traffic_policy() -> None:
    folder = load_config([str(EXAMPLES / "provider_fallback")], env={})
    assert {b.schema.name for b in folder.backends} == {"OpenAI", "AWSBedrock"}
    config = load_config([str(EXAMPLES / "provider_fallback/fallback.yaml")], env={})
    assert config.policies == ()  # retry is enforced now (config/resilience.py)
    assert "accepted, not enforced yet" not in summarize(config)
    retry = next(r for r in folder.rules if r.route == "default/provider-fallback").resilience.retry
    assert (retry.num_retries, retry.attempts_per_priority, retry.status_codes) == (5, 1, frozenset({500}))


# --- docs/configuration.md --------------------------------------------------------------------------------

DOCS = Path(__file__).parents[2] / "docs" / "configuration.md"
README = Path(__file__).parents[2] / "README.md"
DOC_ENV = {"OPENAI_API_KEY": "sk-docs", "AZURE_OPENAI_API_KEY": "azure-docs"}


def doc_blocks(info: str, doc: Path = DOCS) -> list[str]:
    """The fenced blocks of a doc (docs/configuration.md by default) whose info string is exactly `info`."""
    return re.findall(rf"^```{info}\n(.*?)^```$", doc.read_text(), flags=re.S | re.M)


def test_docs_have_complete_examples() -> None:
    assert len(doc_blocks("yaml")) >= 2


@pytest.mark.parametrize("index", range(len(doc_blocks("yaml"))) if DOCS.exists() else [])
def test_docs_yaml_examples_compile(index: int, tmp_path: Path) -> None:
    path = tmp_path / f"example-{index}.yaml"
    path.write_text(doc_blocks("yaml")[index])
    config = load_config([str(path)], env=DOC_ENV)
    assert config.rules and config.backends


def test_docs_yaml_fragments_parse() -> None:
    import yaml

    for block in doc_blocks("yaml fragment"):
        assert list(yaml.safe_load_all(block))


def test_readme_config_example_compiles(tmp_path: Path) -> None:
    (block,) = doc_blocks("yaml", README)
    path = tmp_path / "gateway.yaml"
    path.write_text(block)
    config = load_config([str(path)], env=DOC_ENV)
    (backend,) = config.backends
    assert backend.endpoints[0].tls and backend.credential is not None
    assert backend.credential.secret == "sk-docs"
