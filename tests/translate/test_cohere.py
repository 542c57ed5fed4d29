"""Cohere rerank -> Cohere: golden table, usage from `meta`, errors in Cohere's shape, endpoint wiring."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from sluicegate.config.compile import SUPPORTED_SCHEMAS, load_config
from sluicegate.config.runtime import Backend, BackendRef, BodyMutation, Endpoint, Schema
from sluicegate.core.context import Request, RequestContext
from sluicegate.core.errors import ROUTE_NOT_FOUND, GatewayError
from sluicegate.core.usage import Usage
from sluicegate.endpoints.cohere_rerank import SPEC
from sluicegate.endpoints.gateway import LLM_ENDPOINTS
from sluicegate.translate.cohere_cohere import CohereToCohere, rerank_usage

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "cohere_cohere"
DOC = Path(__file__).resolve().parents[2] / "docs" / "providers" / "cohere.md"
CASES = sorted(p.name for p in GOLDEN.iterdir() if p.is_dir())
ENDPOINTS = (Endpoint("127.0.0.1", 1, False),)


def load(case: str, name: str) -> Any:
    return orjson.loads((GOLDEN / case / f"{name}.json").read_bytes())


def backend_ref(config: dict[str, Any]) -> BackendRef:
    mutation = config.get("body_mutation", {})
    return BackendRef(
        Backend("default/cohere", Schema("Cohere", version=config.get("version")), ENDPOINTS),
        model_name_override=config.get("model_name_override"),
        body_mutation=BodyMutation(tuple(mutation.get("set", {}).items()), tuple(mutation.get("remove", ()))),
    )


def context(raw: bytes) -> RequestContext:
    ctx = RequestContext(Request("POST", SPEC.path, "", {}, raw, []), SPEC.operation)
    ctx.body = orjson.loads(raw)
    ctx.model = ctx.body["model"]
    return ctx


def body_bytes(body: Any) -> bytes:
    return body.encode() if isinstance(body, str) else orjson.dumps(body)


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str) -> None:
    config = load(case, "config")
    raw = (GOLDEN / case / "request.json").read_bytes()
    ctx = context(raw)
    translator = CohereToCohere(ctx, backend_ref(config))

    upstream = translator.request(ctx)
    expected = load(case, "upstream_request")
    assert (upstream.method, upstream.target) == (expected["method"], expected["target"])
    assert upstream.headers == [tuple(h) for h in expected["headers"]]
    assert orjson.loads(upstream.body) == expected["body"]
    if not config:
        assert upstream.body is raw  # passthrough-first: the client's bytes, not a re-serialization

    response = load(case, "upstream_response")
    client = load(case, "client_response")
    body = body_bytes(response["body"])
    if response["status"] >= 400:
        assert orjson.loads(translator.error(response["status"], body)) == client["body"]
        return
    headers = [(b"content-type", b"application/json")]
    assert translator.response_headers(200, headers) == headers
    out, usage = translator.response_body(body, True)
    assert out == body  # the response is never rewritten
    assert orjson.loads(out) == client["body"]
    assert usage == (Usage(**client["usage"]) if client["usage"] is not None else None)
    assert translator.response_model == client["model"]


@pytest.mark.parametrize("case", [c for c in CASES if load(c, "upstream_response")["status"] < 400])
def test_golden_response_relayed_in_pieces(case: str) -> None:
    """A body without Content-Length is relayed as it comes; usage is known at the end all the same."""
    raw = (GOLDEN / case / "request.json").read_bytes()
    ctx = context(raw)
    translator = CohereToCohere(ctx, backend_ref(load(case, "config")))
    body = body_bytes(load(case, "upstream_response")["body"])
    third = len(body) // 3
    out = []
    for piece in (body[:third], body[third : 2 * third], body[2 * third :]):
        sent, usage = translator.response_body(piece, False)
        assert usage is None
        out.append(sent)
    sent, usage = translator.response_body(b"", True)
    assert b"".join(out) + sent == body
    expected = load(case, "client_response")["usage"]
    assert usage == (Usage(**expected) if expected is not None else None)


@pytest.mark.parametrize(
    ("meta", "usage"),
    [
        ({"tokens": {"input_tokens": 25}}, Usage(25, 0, 25)),
        ({"tokens": {"input_tokens": 10.7, "output_tokens": 2.0}}, Usage(10, 2, 12)),
        ({"tokens": {}, "billed_units": {"input_tokens": 5, "output_tokens": 1}}, Usage(5, 1, 6)),
        ({"tokens": {"input_tokens": None}}, Usage()),
        ({"billed_units": {"search_units": 1}, "cached_tokens": 3}, Usage(cached_input_tokens=3)),
        ({"billed_units": {"search_units": 1}}, None),
        ({}, None),
        (None, None),
        ("junk", None),
    ],
)
def test_rerank_usage(meta: Any, usage: Usage | None) -> None:
    assert rerank_usage(meta) == usage


def test_non_json_success_body_passes_without_usage() -> None:
    ctx = context(b'{"model": "m", "query": "q", "documents": ["a"]}')
    translator = CohereToCohere(ctx, backend_ref({}))
    assert translator.response_body(b"<html>", True) == (b"<html>", None)
    assert translator.response_body(b"[1, 2]", True) == (b"[1, 2]", None)


def test_long_text_error_is_cut() -> None:
    ctx = context(b'{"model": "m"}')
    body = orjson.loads(CohereToCohere(ctx, backend_ref({})).error(500, b"x" * 5000))
    assert body == {"message": "x" * 1000}


def test_gateway_errors_render_in_cohere_shape() -> None:
    error = GatewayError(404, ROUTE_NOT_FOUND, code="model_not_found", param="model")
    assert orjson.loads(error.body("cohere")) == {"message": ROUTE_NOT_FOUND}
    assert orjson.loads(error.cohere_body()) == {"message": ROUTE_NOT_FOUND}
    assert "error" in orjson.loads(error.body("openai"))  # the other APIs are unchanged


def test_endpoint_is_registered_with_cohere_errors() -> None:
    assert LLM_ENDPOINTS["/cohere/v2/rerank"] is SPEC
    assert (SPEC.api, SPEC.operation, SPEC.streams) == ("cohere", "rerank", False)
    assert SPEC.translators == {"Cohere": CohereToCohere}
    assert "Cohere" in SUPPORTED_SCHEMAS


def test_docs_example_compiles(tmp_path: Path) -> None:
    (block,) = re.findall(r"^```yaml\n(.*?)^```$", DOC.read_text(), flags=re.S | re.M)
    path = tmp_path / "cohere.yaml"
    path.write_text(block)
    config = load_config([str(path)], env={"COHERE_API_KEY": "co-docs"})
    (backend,) = config.backends
    assert (backend.schema.name, backend.schema.version) == ("Cohere", "v2")
    assert backend.credential is not None and backend.credential.secret == "co-docs"
    assert [ref.model_name_override for rule in config.rules for ref in rule.backend_refs] == [
        None,
        "rerank-english-v3.0",
    ]
