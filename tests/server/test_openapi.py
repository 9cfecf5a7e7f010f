"""docs/openapi.json against the API: same routes, and real responses validate."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from api_support import (
    ADMIN_TOKEN,
    RAW_TOKEN,
    READER_TOKEN,
    Reply,
    api_overrides,
    free_port,
    http,
    message_with_attachment,
    send,
    wait_for_api,
    wait_for_leads,
)
from server_support import RunningServer, lead_message

from leadparse.cli import lead_json_schema
from leadparse.server.config import load_settings
from leadparse.server.store import SQLiteStore

pytest.importorskip("aiohttp", reason="the API needs the 'server' extra")
jsonschema = pytest.importorskip("jsonschema")
referencing = pytest.importorskip("referencing")

from leadparse.server.api import create_app, load_openapi_document  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT_URI = "urn:leadparse:openapi"

StartServer = Callable[..., RunningServer]


def _document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(
        (ROOT / "docs" / "openapi.json").read_text(encoding="utf-8")
    )
    return document


def _hoisted(node: Any) -> Any:
    # docs/schema.json refers to "#/$defs/X"; the OpenAPI document keeps
    # those definitions under components/schemas.
    if isinstance(node, dict):
        return {
            key: value.replace("#/$defs/", "#/components/schemas/")
            if key == "$ref"
            else _hoisted(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_hoisted(item) for item in node]
    return node


def _validator(status_schema: dict[str, Any]) -> Any:
    from referencing.jsonschema import DRAFT202012

    document = _document()
    registry = referencing.Registry().with_resource(
        DOCUMENT_URI, referencing.Resource(contents=document, specification=DRAFT202012)
    )
    schema = dict(status_schema)
    if "$ref" in schema:
        schema["$ref"] = DOCUMENT_URI + schema["$ref"]
    return jsonschema.Draft202012Validator(schema, registry=registry)


def _check(path: str, method: str, reply: Reply) -> None:
    operation = _document()["paths"][path][method]
    responses = operation["responses"]
    assert str(reply.status) in responses, (
        f"{method.upper()} {path} {reply.status} is not documented"
    )
    content = responses[str(reply.status)]["content"]
    media_type = reply.headers["Content-Type"].split(";")[0]
    assert media_type in content, (
        f"{media_type} is not documented for {path} {reply.status}"
    )
    if media_type != "application/json":
        return
    validator = _validator(content[media_type]["schema"])
    errors = [error.message for error in validator.iter_errors(reply.json())]
    assert errors == [], f"{method.upper()} {path} {reply.status}: {errors[:3]}"


def test_router_routes_match_document(tmp_path: Path) -> None:
    settings = load_settings(env={}, overrides={"api.token": ADMIN_TOKEN})
    store = SQLiteStore(tmp_path)
    try:
        app = create_app(store, settings.api)
        routes = {
            (route.method.lower(), route.resource.canonical)
            for route in app.router.routes()
            if route.resource is not None
        }
    finally:
        store.close()
    documented = {
        (method, path)
        for path, operations in _document()["paths"].items()
        for method in operations
    }
    assert routes == documented


def test_lead_schema_matches_docs_schema() -> None:
    document = _document()
    lead = lead_json_schema()
    schemas = document["components"]["schemas"]
    expected = {
        name: _hoisted(definition) for name, definition in lead["$defs"].items()
    }
    expected["Lead"] = _hoisted(
        {key: value for key, value in lead.items() if key != "$defs"}
    )
    for name, definition in expected.items():
        assert schemas[name] == definition, (
            f"components.schemas.{name} differs from leadparse schema"
        )
    jsonschema.Draft202012Validator.check_schema(schemas["Lead"])


def test_document_is_openapi_31() -> None:
    document = _document()
    assert document["openapi"] == "3.1.0"
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
    }
    assert document["paths"]["/healthz"]["get"]["security"] == []
    assert document["paths"]["/v1/attachments/{sha256}"]["get"]["security"] == []
    assert load_openapi_document() == document


def test_real_responses_validate(start_server: StartServer) -> None:
    port = free_port()
    server = start_server(**api_overrides(port))
    base_url = f"http://127.0.0.1:{port}"
    wait_for_api(base_url)
    send(
        server,
        [
            lead_message(1),
            lead_message(2),
            message_with_attachment(3, b"\x00\x01" * 100),
        ],
    )
    leads = wait_for_leads(base_url, 3)
    lead_id = leads[0]["id"]
    missing = "msg_" + "0" * 32

    cases: list[tuple[str, str, Reply]] = [
        ("/healthz", "get", http("GET", f"{base_url}/healthz")),
        (
            "/openapi.json",
            "get",
            http("GET", f"{base_url}/openapi.json", token=READER_TOKEN),
        ),
        ("/openapi.json", "get", http("GET", f"{base_url}/openapi.json")),
        ("/metrics", "get", http("GET", f"{base_url}/metrics", token=READER_TOKEN)),
        (
            "/v1/leads",
            "get",
            http("GET", f"{base_url}/v1/leads?limit=2", token=READER_TOKEN),
        ),
        (
            "/v1/leads",
            "get",
            http("GET", f"{base_url}/v1/leads?cursor=zz", token=READER_TOKEN),
        ),
        ("/v1/leads", "get", http("GET", f"{base_url}/v1/leads")),
        ("/v1/leads", "get", http("GET", f"{base_url}/v1/leads", token=RAW_TOKEN)),
        (
            "/v1/leads/{id}",
            "get",
            http("GET", f"{base_url}/v1/leads/{lead_id}", token=READER_TOKEN),
        ),
        (
            "/v1/leads/{id}",
            "get",
            http("GET", f"{base_url}/v1/leads/{missing}", token=READER_TOKEN),
        ),
        (
            "/v1/leads/{id}/raw",
            "get",
            http("GET", f"{base_url}/v1/leads/{lead_id}/raw", token=RAW_TOKEN),
        ),
        (
            "/v1/leads/{id}/raw",
            "get",
            http("GET", f"{base_url}/v1/leads/{missing}/raw", token=RAW_TOKEN),
        ),
        (
            "/v1/leads/ack",
            "post",
            http(
                "POST",
                f"{base_url}/v1/leads/ack",
                token=READER_TOKEN,
                body={"ids": [lead_id, missing]},
            ),
        ),
        (
            "/v1/leads/ack",
            "post",
            http(
                "POST",
                f"{base_url}/v1/leads/ack",
                token=READER_TOKEN,
                body={"ids": "x"},
            ),
        ),
        (
            "/v1/leads/ack",
            "post",
            http(
                "POST",
                f"{base_url}/v1/leads/ack",
                token=READER_TOKEN,
                raw_body=b"x",
                content_type="text/plain",
            ),
        ),
        (
            "/v1/admin/dlq/replay",
            "post",
            http("POST", f"{base_url}/v1/admin/dlq/replay", token=ADMIN_TOKEN, body={}),
        ),
        (
            "/v1/admin/dlq/replay",
            "post",
            http(
                "POST", f"{base_url}/v1/admin/dlq/replay", token=READER_TOKEN, body={}
            ),
        ),
        (
            "/v1/admin/forget",
            "post",
            http(
                "POST",
                f"{base_url}/v1/admin/forget",
                token=ADMIN_TOKEN,
                body={"email": "nobody@example.test"},
            ),
        ),
        (
            "/v1/admin/forget",
            "post",
            http("POST", f"{base_url}/v1/admin/forget", token=ADMIN_TOKEN, body={}),
        ),
    ]
    # Every lead in a full page validates, including one with an attachment.
    page = http("GET", f"{base_url}/v1/leads?limit=10", token=READER_TOKEN)
    cases.append(("/v1/leads", "get", page))
    attachment_url = next(
        item["lead"]["attachments"][0]["url"]
        for item in page.json()["leads"]
        if item["lead"]["attachments"]
    )
    cases.append(("/v1/attachments/{sha256}", "get", http("GET", attachment_url)))
    cases.append(("/v1/attachments/{sha256}", "get", http("GET", attachment_url + "0")))
    cases.append(
        (
            "/v1/attachments/{sha256}",
            "get",
            http("GET", f"{base_url}/v1/attachments/{'a' * 64}?expires=1&signature=x"),
        )
    )

    statuses = sorted({reply.status for _path, _method, reply in cases})
    assert statuses == [200, 400, 401, 403, 404, 415]
    for path, method, reply in cases:
        _check(path, method, reply)
