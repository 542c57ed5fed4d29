"""Start-up memory: heavy optional libraries load only when the config uses the feature that needs them."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from harness import backend_yaml

SRC = str(Path(__file__).resolve().parents[2] / "src")

TOKENS = "  llmRequestCosts: [{metadataKey: t, type: TotalToken}]\n"
CEL = "  llmRequestCosts: [{metadataKey: c, type: CEL, cel: 'input_tokens + output_tokens * 3u'}]\n"

ROUTE = """apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: {name}}}
spec:
{costs}  rules:
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: {name}}}]}}]
      backendRefs: [{{name: {name}}}]
"""


def route(name: str, schema: str, costs: str) -> str:
    """A route of one model to one backend of `schema` (on a port nothing listens on: nothing is sent)."""
    return ROUTE.format(name=name, costs=costs) + backend_yaml(name, 9, schema)


# API-key and AWS credentials, token costs and a Global limit: what the benchmark's config uses.
PLAIN = "---\n".join(
    [
        route("json", "OpenAI", TOKENS),
        route("bedrock", "AWSBedrock", ""),
        """apiVersion: v1
kind: Secret
metadata: {name: keys}
type: Opaque
stringData:
  apiKey: sk-test
  credentials: |
    [default]
    aws_access_key_id = AKIAIOSFODNN7EXAMPLE
    aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY
""",
        """apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata: {name: key}
spec:
  targetRefs: [{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: json}]
  type: APIKey
  apiKey: {secretRef: {name: keys}}
""",
        """apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata: {name: aws}
spec:
  targetRefs: [{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: bedrock}]
  type: AWSCredentials
  awsCredentials:
    region: us-east-1
    credentialsFile: {secretRef: {name: keys}, profile: default}
""",
        """apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {name: budget}
spec:
  targetRefs: [{name: json, kind: AIGatewayRoute, group: aigateway.envoyproxy.io}]
  rateLimit:
    type: Global
    global:
      rules:
        - limit: {requests: 1000, unit: Hour}
          cost:
            request: {from: Number, number: 0}
            response: {from: Metadata, metadata: {namespace: io.envoy.ai_gateway, key: t}}
""",
    ]
)

# A CEL cost and a guardrail: these need cel-cpp and re2.
FEATURES = "---\n".join(
    [
        route("json", "OpenAI", CEL),
        """apiVersion: sluicegate.dev/v1alpha1
kind: GuardrailPolicy
metadata: {name: guard}
spec:
  targetRefs: [{group: aigateway.envoyproxy.io, kind: AIGatewayRoute, name: json}]
  rules:
    - name: pii
      action: Redact
      detectors: {builtin: [Email]}
""",
    ]
)

HEAVY = [
    *("aiohttp", "botocore", "google.auth", "azure.identity", "cel_expr_python", "google.protobuf", "re2"),
    *("psutil", "opentelemetry.sdk.metrics", "redis"),
]

# What `sluicegate run` does before serving: compile the config, open the stores, build the gateway.
START = """
import asyncio, json, sys
from sluicegate.config.compile import load_config
from sluicegate.endpoints.gateway import Gateway
from sluicegate.ratelimit.stores import open_stores
from sluicegate.upstream.pool import DnsCache, Pools

async def main():
    config = load_config([sys.argv[1]])
    stores = open_stores(sys.argv[2] or None)
    gateway = Gateway(config, Pools(DnsCache()), stores)
    gateway.health_checks.stop()
    await stores.close()

asyncio.run(main())
hidden = [name for name, module in sys.modules.items() if module is None]
print(json.dumps({"loaded": [m for m in json.loads(sys.argv[3]) if m in sys.modules], "hidden": hidden}))
"""


def loaded_after_start(tmp_path: Path, config: str, redis_url: str = "") -> dict[str, list[str]]:
    """The HEAVY modules a fresh interpreter has loaded after building a gateway for `config`."""
    path = tmp_path / "c.yaml"
    path.write_text(config)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(START), str(path), redis_url, json.dumps(HEAVY)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"},
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_a_plain_config_loads_no_optional_library(tmp_path: Path) -> None:
    assert loaded_after_start(tmp_path, PLAIN) == {"loaded": [], "hidden": []}


def test_redis_loads_without_its_optional_opentelemetry_metrics(tmp_path: Path) -> None:
    # the modules hidden from redis-py while it is imported are visible again afterwards
    started = loaded_after_start(tmp_path, PLAIN, "redis://127.0.0.1:9/0")
    assert started == {"loaded": ["redis"], "hidden": []}


def test_cel_costs_and_guardrails_load_their_engines(tmp_path: Path) -> None:
    loaded = loaded_after_start(tmp_path, FEATURES)["loaded"]
    assert {"cel_expr_python", "google.protobuf", "re2"} <= set(loaded)
    assert "aiohttp" not in loaded
