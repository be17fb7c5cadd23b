"""The OpenAPI document is generated from the route table the app registers."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sluice.restapi.app import ROUTES, create_app
from sluice.restapi.auth import NoAuthorizer
from sluice.restapi.openapi import OPENAPI_PATH, document


def served_routes() -> set[tuple[str, str]]:
    app = create_app(None, NoAuthorizer("ns"), "ns")  # type: ignore[arg-type]
    return {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if isinstance(route.resource, web.Resource) and route.resource is not None
    }


def test_document_lists_exactly_the_served_routes() -> None:
    doc = document(ROUTES)
    documented = {(method.upper(), path) for path, item in doc["paths"].items() for method in item}
    assert documented == served_routes()
    assert OPENAPI_PATH in doc["paths"]


def test_clear_is_documented_like_the_seed() -> None:
    clear: dict[str, Any] = document(ROUTES)["paths"]["/v0/pipelines/{pipeline_name}/clear"]["post"]
    assert set(clear["responses"]) == {"202", "400", "401", "403", "404", "500"}
    error = clear["responses"]["404"]["content"]["application/json"]["schema"]
    assert error == {"$ref": "#/components/schemas/ErrorResponse"}
    assert clear["x-kubernetes-authorization"]["verb"] == "patch"


def test_delete_is_documented_like_feldera() -> None:
    delete: dict[str, Any] = document(ROUTES)["paths"]["/v0/pipelines/{pipeline_name}"]["delete"]
    assert set(delete["responses"]) == {"200", "400", "401", "403", "404", "500"}
    assert "content" not in delete["responses"]["200"]  # Feldera answers 200 with no body
    assert delete["x-kubernetes-authorization"]["verb"] == "delete"


def test_error_schema_requires_the_three_fields() -> None:
    schema = document(ROUTES)["components"]["schemas"]["ErrorResponse"]
    assert set(schema["required"]) == {"message", "error_code", "details"}


def test_public_routes_need_no_token_and_the_rest_do() -> None:
    doc = document(ROUTES)
    assert doc["security"] == [{"bearerAuth": []}]
    public = {
        path
        for path, item in doc["paths"].items()
        for op in item.values()
        if op.get("security") == []
    }
    assert public == {OPENAPI_PATH, "/healthz"}
