"""GET /v1/models: the models of Exact x-ai-eg-model matches, scoped by Host."""

from __future__ import annotations

import orjson

from sluicegate.config.runtime import Model, RuntimeConfig, host_matches


def list_models(config: RuntimeConfig, host: str) -> bytes:
    """The OpenAI model list for this Host."""
    seen: dict[str, Model] = {}
    for model in config.models:
        if model.id not in seen and host_matches(model.hostnames, host):
            seen[model.id] = model
    data = [
        {"id": m.id, "object": "model", "created": m.created, "owned_by": m.owned_by} for m in seen.values()
    ]
    return orjson.dumps({"object": "list", "data": data})
