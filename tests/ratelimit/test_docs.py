"""Every YAML example in docs/rate-limits.md loads, next to an AIServiceBackend named `openai`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sluicegate.config.compile import compile_resources
from sluicegate.config.load import parse_yaml

DOC = Path(__file__).parents[2] / "docs" / "rate-limits.md"
BACKEND = """
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {name: openai}
spec:
  schema: {name: OpenAI}
  backendRef: {name: openai, kind: Backend, group: gateway.envoyproxy.io}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: openai}
spec:
  endpoints: [{fqdn: {hostname: api.openai.com, port: 443}}]
"""
BLOCKS = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_doc_example_loads(block: str) -> None:
    env = {"REDIS_URL": "redis://127.0.0.1:6379/0"}
    result = parse_yaml(block + "\n---\n" + BACKEND, "docs/rate-limits.md", env)
    assert not result.problems
    config = compile_resources(result.documents, env=env)
    assert config.rate_limits.rules or config.rate_limits.redis_url


def test_the_doc_has_the_worked_examples() -> None:
    assert len(BLOCKS) >= 6
