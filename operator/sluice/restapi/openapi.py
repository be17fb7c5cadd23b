"""The route table's description, and the OpenAPI 3.1 document generated from it.

The app registers exactly the routes of this table and answers with the models named
here, so the document served at /v0/api-docs/openapi.json cannot drift from the server.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from sluice.api.v1alpha1 import MAX_NAME_LENGTH
from sluice.restapi.decide import NAME_PATTERN
from sluice.restapi.models import (
    ErrorResponse,
    Health,
    PipelineInfo,
    PipelineStatusInfo,
    ServerConfig,
)

OPENAPI_PATH = "/v0/api-docs/openapi.json"

# "public": no token; "authenticated": any valid token; otherwise the SubjectAccessReview
# verb on pipelines.sluice.dev in the served namespace.
Access = Literal["public", "authenticated", "get", "list", "patch", "delete"]


@dataclass(frozen=True)
class QueryParam:
    name: str
    values: tuple[str, ...]
    default: str
    description: str


@dataclass(frozen=True)
class Success:
    status: int
    description: str
    # None: no body; a tuple of models: any one of them; list_of: a JSON array of them.
    models: tuple[type[BaseModel], ...] = ()
    list_of: bool = False
    schema: dict[str, Any] | None = None  # a JSON body not described by a model


@dataclass(frozen=True)
class Route:
    method: Literal["GET", "POST", "PATCH", "DELETE"]
    path: str
    operation_id: str
    summary: str
    description: str
    access: Access
    success: Success
    handler: Callable[..., Awaitable[Any]]
    query: tuple[QueryParam, ...] = ()
    not_found: bool = False  # 404 UnknownPipelineName possible
    bad_request: bool = False  # 400 possible beyond name/query validation
    tags: tuple[str, ...] = field(default=("Pipelines",))
    request_body: type[BaseModel] | None = None  # a JSON body, described by this model

    @property
    def named(self) -> bool:
        return "{pipeline_name}" in self.path


SELECTOR = QueryParam(
    "selector",
    ("all", "status", "status_with_connectors"),
    "all",
    "Which fields to return: all, only those needed to follow the pipeline's status, or "
    "those and the connectors' statistics (null: Sluice does not know the image's).",
)

_ERRORS = {
    400: "Action could not be performed, or the request is invalid",
    401: "No credential, or the token is invalid or expired",
    403: "The caller may not perform this action on pipelines in the served namespace",
    404: "Pipeline with that name does not exist",
    500: "Unexpected error",
}


def _error(status: int) -> dict[str, Any]:
    return {
        "description": _ERRORS[status],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
    }


def _ref(model: type[BaseModel]) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _success_schema(success: Success) -> dict[str, Any]:
    one = (
        _ref(success.models[0])
        if len(success.models) == 1
        else {"oneOf": [_ref(m) for m in success.models]}
    )
    return {"type": "array", "items": one} if success.list_of else one


def _operation(route: Route) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = []
    if route.named:
        parameters.append(
            {
                "name": "pipeline_name",
                "in": "path",
                "required": True,
                "description": "Unique pipeline name (the Pipeline resource's metadata.name)",
                "schema": {"type": "string", "pattern": NAME_PATTERN, "maxLength": MAX_NAME_LENGTH},
            }
        )
    for param in route.query:
        parameters.append(
            {
                "name": param.name,
                "in": "query",
                "required": False,
                "description": param.description,
                "schema": {"type": "string", "enum": list(param.values), "default": param.default},
            }
        )
    success: dict[str, Any] = {"description": route.success.description}
    if route.success.models:
        success["content"] = {"application/json": {"schema": _success_schema(route.success)}}
    elif route.success.schema is not None:
        success["content"] = {"application/json": {"schema": route.success.schema}}
    responses: dict[str, Any] = {str(route.success.status): success}
    codes = [500]
    if route.access != "public":
        codes.append(401)
    if route.access not in ("public", "authenticated"):
        codes.append(403)
    if route.named or route.query or route.bad_request:
        codes.append(400)
    if route.not_found:
        codes.append(404)
    for status in sorted(codes):
        responses[str(status)] = _error(status)
    operation: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": route.summary,
        "description": route.description,
        "tags": list(route.tags),
        "parameters": parameters,
        "responses": responses,
    }
    if route.request_body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(route.request_body)}},
        }
    if route.access == "public":
        operation["security"] = []
    elif route.access != "authenticated":
        operation["x-kubernetes-authorization"] = {
            "verb": route.access,
            "group": "sluice.dev",
            "resource": "pipelines",
        }
    return operation


def document(routes: list[Route], server_url: str | None = None) -> dict[str, Any]:
    models: set[type[BaseModel]] = {ErrorResponse}
    for route in routes:
        models.update(route.success.models)
        if route.request_body is not None:
            models.add(route.request_body)
    _, schemas = models_json_schema(
        [(m, "serialization") for m in sorted(models, key=lambda m: m.__name__)],
        ref_template="#/components/schemas/{model}",
    )
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "Sluice REST API",
            "version": "0.2.0",
            "description": "Feldera's pipeline API (the subset Sluice serves), backed by "
            "sluice.dev/v1alpha1 Pipeline resources in one Kubernetes namespace. Requests "
            "carry a Kubernetes bearer token; a TokenReview authenticates it and a "
            "SubjectAccessReview on pipelines.sluice.dev authorizes each action.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearerAuth": []}],
    }
    if server_url:
        doc["servers"] = [{"url": server_url}]
    return doc


__all__ = [
    "OPENAPI_PATH",
    "SELECTOR",
    "ErrorResponse",
    "Health",
    "PipelineInfo",
    "PipelineStatusInfo",
    "QueryParam",
    "Route",
    "ServerConfig",
    "Success",
    "document",
]
