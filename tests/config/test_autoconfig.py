"""Resources from environment variables (as `aigw run` does) and for the offline demo."""

from __future__ import annotations

import pytest

from sluicegate.config.autoconfig import SOURCE, autoconfig_documents, demo_documents
from sluicegate.config.compile import compile_resources
from sluicegate.config.errors import ConfigError
from sluicegate.config.runtime import DEFAULT_LISTENER_PORT, RuntimeConfig
from sluicegate.config.summary import summarize


def compiled(env: dict[str, str]) -> RuntimeConfig:
    """Autoconfigure from env and compile the documents the way files are compiled."""
    auto = autoconfig_documents(env)
    assert auto is not None
    return compile_resources(auto.documents, source=SOURCE, env={})


def test_no_provider_variable_gives_none() -> None:
    assert autoconfig_documents({}) is None
    assert autoconfig_documents({"OPENAI_API_KEY": "", "OPENAI_BASE_URL": "http://x"}) is None


def test_openai_defaults() -> None:
    config = compiled({"OPENAI_API_KEY": "sk-env"})
    assert config.listener_port == DEFAULT_LISTENER_PORT == 1975
    (rule,) = config.rules
    assert (rule.route, rule.request_timeout) == ("default/aigw-run", 120.0)
    assert rule.matches_headers({"x-ai-eg-model": "anything"})
    (backend,) = config.backends
    assert (backend.name, backend.schema.name, backend.schema.prefix) == ("default/openai", "OpenAI", "v1")
    (endpoint,) = backend.endpoints
    assert (endpoint.host, endpoint.port, endpoint.tls, endpoint.server_name) == (
        "api.openai.com",
        443,
        True,
        "api.openai.com",
    )
    assert (backend.credential.type, backend.credential.secret) == ("APIKey", "sk-env")
    assert config.models == ()  # a regular expression lists no model
    assert config.sources == (SOURCE,)
    assert "sk-env" not in summarize(config)


def test_openai_compatible_base_url_with_path_ip_and_headers() -> None:
    config = compiled(
        {
            "OPENAI_API_KEY": "k",
            "OPENAI_BASE_URL": "http://127.0.0.1:11434/api/v1/",
            "OPENAI_ORG_ID": "org-1",
            "OPENAI_PROJECT_ID": "proj-1",
        }
    )
    (backend,) = config.backends
    assert backend.schema.prefix == "api/v1"
    assert [(e.host, e.port, e.tls) for e in backend.endpoints] == [("127.0.0.1", 11434, False)]
    assert dict(backend.header_mutation.set) == {"openai-organization": "org-1", "openai-project": "proj-1"}


def test_base_url_without_path_uses_the_default_prefix() -> None:
    (backend,) = compiled({"OPENAI_API_KEY": "k", "OPENAI_BASE_URL": "https://api.deepseek.com"}).backends
    assert backend.schema.prefix == "v1"


def test_azure_openai() -> None:
    env = {
        "AZURE_OPENAI_API_KEY": "az-key",
        "AZURE_OPENAI_ENDPOINT": "https://res.openai.azure.com/",
        "OPENAI_API_VERSION": "2024-02-01",
    }
    (backend,) = compiled(env).backends
    assert (backend.schema.name, backend.schema.version) == ("AzureOpenAI", "2024-02-01")
    assert (backend.credential.type, backend.credential.secret) == ("AzureAPIKey", "az-key")
    assert [(e.host, e.port, e.tls) for e in backend.endpoints] == [("res.openai.azure.com", 443, True)]


@pytest.mark.parametrize("missing", ["AZURE_OPENAI_ENDPOINT", "OPENAI_API_VERSION"])
def test_azure_requires_endpoint_and_version(missing: str) -> None:
    env = {
        "AZURE_OPENAI_API_KEY": "k",
        "AZURE_OPENAI_ENDPOINT": "https://r.openai.azure.com",
        "OPENAI_API_VERSION": "2024-02-01",
    }
    del env[missing]
    with pytest.raises(ConfigError) as err:
        autoconfig_documents(env)
    assert str(err.value) == f"<environment>: {missing}: is required when AZURE_OPENAI_API_KEY is set"


def test_azure_wins_over_openai_and_openai_over_anthropic() -> None:
    auto = autoconfig_documents(
        {
            "OPENAI_API_KEY": "o",
            "AZURE_OPENAI_API_KEY": "a",
            "ANTHROPIC_API_KEY": "c",
            "AZURE_OPENAI_ENDPOINT": "https://r.openai.azure.com",
            "OPENAI_API_VERSION": "2024-02-01",
        }
    )
    assert auto is not None
    assert any("using Azure OpenAI" in note for note in auto.notes)
    assert any("ANTHROPIC_API_KEY is ignored" in note for note in auto.notes)
    (backend,) = compile_resources(auto.documents, env={}).backends
    assert backend.schema.name == "AzureOpenAI"


def test_anthropic_alone() -> None:
    config = compiled({"ANTHROPIC_API_KEY": "sk-ant"})
    (backend,) = config.backends
    assert (backend.name, backend.schema.name) == ("default/anthropic", "Anthropic")
    assert backend.schema.prefix == "v1"
    assert [(e.host, e.port, e.tls) for e in backend.endpoints] == [("api.anthropic.com", 443, True)]
    assert (backend.credential.type, backend.credential.secret) == ("AnthropicAPIKey", "sk-ant")
    assert "sk-ant" not in summarize(config)


def test_anthropic_base_url() -> None:
    auto = autoconfig_documents(
        {"ANTHROPIC_API_KEY": "c", "ANTHROPIC_BASE_URL": "https://proxy.example/anthropic"}
    )
    assert auto is not None and auto.notes == []
    (backend,) = compile_resources(auto.documents, env={}).backends
    assert (backend.schema.name, backend.schema.prefix) == ("Anthropic", "anthropic")
    assert (backend.credential.type, backend.credential.secret) == ("AnthropicAPIKey", "c")


@pytest.mark.parametrize("url", ["ftp://example.com", "https://", "http://example.com:notaport"])
def test_invalid_base_url_names_the_variable(url: str) -> None:
    with pytest.raises(ConfigError) as err:
        autoconfig_documents({"OPENAI_API_KEY": "k", "OPENAI_BASE_URL": url})
    (problem,) = err.value.problems
    assert (problem.file, problem.field) == ("<environment>", "OPENAI_BASE_URL")
    assert "invalid base URL" in problem.message


def test_demo_documents_route_each_model() -> None:
    config = compile_resources(demo_documents("http://127.0.0.1:9999", ["m1", "m2"]), env={})
    assert config.listener_port is None
    assert [m.id for m in config.models] == ["m1", "m2"]
    (rule,) = config.rules
    assert rule.matches_headers({"x-ai-eg-model": "m2"})
    assert not rule.matches_headers({"x-ai-eg-model": "m3"})
    (backend,) = config.backends
    assert (backend.schema.name, backend.schema.prefix, backend.credential) == ("OpenAI", "v1", None)
    assert [(e.host, e.port, e.tls) for e in backend.endpoints] == [("127.0.0.1", 9999, False)]


def test_demo_documents_with_port_and_key() -> None:
    docs = demo_documents("https://fake.local:8443/openai", ["m"], api_key="demo-key", port=4000)
    config = compile_resources(docs, env={})
    assert config.listener_port == 4000
    (backend,) = config.backends
    assert backend.schema.prefix == "openai"
    assert (backend.credential.type, backend.credential.secret) == ("APIKey", "demo-key")
    assert backend.endpoints[0].tls
