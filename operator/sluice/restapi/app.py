"""`sluice api`: Feldera's pipeline endpoints, served from Pipeline resources with aiohttp.

Handlers are thin: authenticate, authorize, read the resource, let the pure module
(decide.py) answer or choose a patch, send the patch. The operator does the work.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from kubernetes.client.exceptions import ApiException

from sluice.restapi import decide as d
from sluice.restapi import feldera_types
from sluice.restapi.auth import Authorizer
from sluice.restapi.models import (
    Health,
    PatchPipeline,
    PipelineInfo,
    PipelineStatusInfo,
    PipelineStatusWithConnectorsInfo,
    ServerConfig,
)
from sluice.restapi.openapi import OPENAPI_PATH, SELECTOR, QueryParam, Route, Success, document
from sluice.restapi.store import Conflict, PipelineStore, Rejected

LOG = logging.getLogger("sluice.restapi")
PATCH_ATTEMPTS = 5  # re-read and re-decide after a 409 (a concurrent change)
DELETE_WAIT = 20.0  # seconds DELETE waits for the operator's finalizer, as Feldera's is synchronous


@dataclass
class Context:
    store: PipelineStore
    authorizer: Authorizer
    namespace: str
    openapi: bytes


Query = dict[str, str]


@dataclass(frozen=True)
class Call:
    """One request, as a handler sees it: the pipeline named in the path ("" when none),
    the validated query, and who is calling (Kubernetes' username; "" on public routes)."""

    name: str
    query: Query
    caller: str
    body: Any = None  # the request's JSON, on routes that take one


CONTEXT = web.AppKey("context", Context)
Handler = Callable[[Context, Call], Awaitable[web.Response]]


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(data).encode(), status=status, content_type="application/json"
    )


def _accepted() -> web.Response:
    return web.Response(status=202)  # Feldera answers an accepted action with no body


# ---- handlers ---------------------------------------------------------------------------


async def list_pipelines(ctx: Context, call: Call) -> web.Response:
    items = await asyncio.to_thread(ctx.store.list)
    return json_response([d.to_feldera(obj, _selector(call.query)) for obj in items])


async def get_pipeline(ctx: Context, call: Call) -> web.Response:
    obj = await asyncio.to_thread(ctx.store.get, call.name)
    if obj is None:
        raise d.unknown_pipeline(call.name)
    return json_response(d.to_feldera(obj, _selector(call.query)))


_SELECTORS: dict[str, d.Selector] = {
    "all": "all",
    "status": "status",
    "status_with_connectors": "status_with_connectors",
}


def _selector(query: Query) -> d.Selector:
    return _SELECTORS[query["selector"]]  # validated against SELECTOR's values


async def _act(
    ctx: Context,
    call: Call,
    action: str,
    decide: Callable[[dict[str, Any]], dict[str, Any] | None],
) -> web.Response:
    name = call.name
    for _ in range(PATCH_ATTEMPTS):
        obj = await asyncio.to_thread(ctx.store.get, name)
        if obj is None:
            raise d.unknown_pipeline(name)
        patch = decide(obj)
        if patch is None:
            return _accepted()
        try:
            if not await asyncio.to_thread(ctx.store.patch, name, patch):
                raise d.unknown_pipeline(name)
            await _record(ctx, call, obj, action, patch)
            return _accepted()
        except Conflict:
            continue  # changed since read: decide again on the new state
        except Rejected as error:
            raise d.ApiError(
                400, "PipelineChangeRejected", error.message, {"pipeline_name": name}
            ) from None
    raise d.ApiError(
        500,
        "ConcurrentModification",
        f"Pipeline '{name}' kept changing while the request was applied; retry",
        {"pipeline_name": name, "attempts": PATCH_ATTEMPTS},
    )


def _clear_token() -> str:
    # Unique, and readable in `kubectl get pipeline -o yaml`: when, and that the API set it.
    return f"api-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{secrets.token_hex(4)}"


async def _record(
    ctx: Context, call: Call, obj: dict[str, Any], action: str, patch: dict[str, Any]
) -> None:
    """Who asked for what, where people look: an Event on the pipeline (as Argo CD records
    the actions it runs) and a log line. The API server's audit log names only the API's
    own ServiceAccount, which made the change on the caller's behalf."""
    message = f"{call.caller} asked to {action} through the REST API"
    if patch:
        message += f"; spec patched: {json.dumps(patch.get('spec', {}), separators=(',', ':'))}"
    LOG.info("%s/%s: %s", ctx.namespace, call.name, message)
    reason = f"{action.capitalize()}Requested"
    try:
        await asyncio.to_thread(ctx.store.record_event, obj, reason, message)
    except ApiException as error:  # best effort: the change itself is made
        LOG.warning("could not record Event %s on %s: %s", reason, call.name, error.status)


async def clear(ctx: Context, call: Call) -> web.Response:
    return await _act(ctx, call, "clear", lambda obj: d.decide_clear(obj, _clear_token()))


async def start(ctx: Context, call: Call) -> web.Response:
    return await _act(ctx, call, "start", d.decide_start)


async def stop(ctx: Context, call: Call) -> web.Response:
    force = call.query["force"] == "true"
    return await _act(ctx, call, "stop", lambda obj: d.decide_stop(obj, force))


async def patch_pipeline(ctx: Context, call: Call) -> web.Response:
    """Feldera's PATCH, for the description and the storage size (decide.decide_edit);
    answers the pipeline as it is after the change."""
    name = call.name
    for _ in range(PATCH_ATTEMPTS):
        obj = await asyncio.to_thread(ctx.store.get, name)
        if obj is None:
            raise d.unknown_pipeline(name)
        patch = d.decide_edit(obj, call.body)
        if patch is not None:
            try:
                if not await asyncio.to_thread(ctx.store.patch, name, patch):
                    raise d.unknown_pipeline(name)
            except Conflict:
                continue
            except Rejected as error:
                raise d.edit_refused(name, error.message) from None
            await _record(ctx, call, obj, "edit", patch)
            obj = await asyncio.to_thread(ctx.store.get, name)
            if obj is None:
                raise d.unknown_pipeline(name)
        return json_response(d.to_feldera(obj, "all"))
    raise d.ApiError(
        500,
        "ConcurrentModification",
        f"Pipeline '{name}' kept changing while the request was applied; retry",
        {"pipeline_name": name, "attempts": PATCH_ATTEMPTS},
    )


async def delete_pipeline(ctx: Context, call: Call) -> web.Response:
    """Feldera's DELETE: refused (400) unless fully stopped with storage cleared; then the
    Pipeline is deleted (preconditioned on what was checked) and, as a Feldera client expects
    a deleted pipeline to be gone, the answer waits briefly for the operator's finalizer."""
    name = call.name
    for _ in range(PATCH_ATTEMPTS):
        obj = await asyncio.to_thread(ctx.store.get, name)
        if obj is None:
            raise d.unknown_pipeline(name)
        if not obj["metadata"].get("deletionTimestamp"):
            uid, resource_version = d.decide_delete(obj)
            try:
                if not await asyncio.to_thread(ctx.store.delete, name, uid, resource_version):
                    raise d.unknown_pipeline(name)
            except Conflict:
                continue
            await _record(ctx, call, obj, "delete", {})
        await _wait_gone(ctx, name)
        return web.Response(status=200)
    raise d.ApiError(
        500,
        "ConcurrentModification",
        f"Pipeline '{name}' kept changing while the request was applied; retry",
        {"pipeline_name": name, "attempts": PATCH_ATTEMPTS},
    )


async def _wait_gone(ctx: Context, name: str) -> None:
    deadline = time.monotonic() + DELETE_WAIT
    while time.monotonic() < deadline:
        if await asyncio.to_thread(ctx.store.get, name) is None:
            return
        await asyncio.sleep(0.2)
    LOG.warning(
        "%s/%s: deleted, but still finalizing after %.0fs", ctx.namespace, name, DELETE_WAIT
    )


async def dismiss_error(ctx: Context, call: Call) -> web.Response:
    # status.error is recomputed by the operator on every reconcile: nothing to dismiss.
    # Feldera answers this one 200, not 202.
    if await asyncio.to_thread(ctx.store.get, call.name) is None:
        raise d.unknown_pipeline(call.name)
    return web.Response(status=200)


async def get_config(ctx: Context, call: Call) -> web.Response:
    config = feldera_types.configuration(d.PLATFORM_VERSION, ctx.namespace)
    return json_response(ServerConfig.model_validate(config).model_dump())


async def get_openapi(ctx: Context, call: Call) -> web.Response:
    return web.Response(body=ctx.openapi, content_type="application/json")


async def healthz(ctx: Context, call: Call) -> web.Response:
    return json_response(Health(status="ok").model_dump())


_BOOL = ("true", "false")
# What GET answers, by selector: all, status, status_with_connectors.
PIPELINE_SHAPES = (PipelineInfo, PipelineStatusInfo, PipelineStatusWithConnectorsInfo)
_PIPELINE = "/v0/pipelines/{pipeline_name}"

ROUTES: list[Route] = [
    Route(
        "GET",
        "/v0/pipelines",
        "list_pipelines",
        "Retrieve the list of pipelines",
        "The pipelines of the served namespace, by name.",
        "list",
        Success(
            200,
            "List of pipelines retrieved successfully",
            PIPELINE_SHAPES,
            list_of=True,
        ),
        list_pipelines,
        query=(SELECTOR,),
    ),
    Route(
        "GET",
        _PIPELINE,
        "get_pipeline",
        "Retrieve a pipeline",
        "The pipeline in Feldera's shape; storage_status shows Clearing as soon as a "
        "/clear is accepted.",
        "get",
        Success(200, "Pipeline retrieved successfully", PIPELINE_SHAPES),
        get_pipeline,
        query=(SELECTOR,),
        not_found=True,
    ),
    Route(
        "DELETE",
        _PIPELINE,
        "delete_pipeline",
        "Delete a pipeline",
        "Deletes the Pipeline resource. Only when fully stopped (400 "
        "DeleteRestrictedToFullyStopped) and its storage is Cleared (400 "
        "DeleteRestrictedToClearedStorage), as in Feldera. Answers once the pipeline is gone "
        "(or after a short wait while the operator finalizes it).",
        "delete",
        Success(200, "Pipeline successfully deleted"),
        delete_pipeline,
        not_found=True,
        bad_request=True,
    ),
    Route(
        "PATCH",
        _PIPELINE,
        "patch_pipeline",
        "Partially update the pipeline",
        "What Sluice can change of a pipeline through this API: `description` (the "
        "annotation sluice.dev/description) and runtime_config.resources.storage_mb_max "
        "(spec.storage.size, in MB). Fields left out, null, or as GET shows them change "
        "nothing; any other change is 400 EditNotSupported (edit the Pipeline resource). The "
        "size may grow while storage is in use where its StorageClass allows volume "
        "expansion; shrinking it, or growing it where the class cannot expand, is 400 "
        "EditRestrictedToClearedStorage unless storage is Cleared, as in Feldera.",
        "patch",
        Success(200, "Pipeline successfully updated", (PipelineInfo,)),
        patch_pipeline,
        not_found=True,
        bad_request=True,
        request_body=PatchPipeline,
    ),
    Route(
        "POST",
        f"{_PIPELINE}/clear",
        "post_pipeline_clear",
        "Clear Storage",
        "Clears the pipeline storage asynchronously: records a new "
        "spec.storage.actionClearRequest "
        "and the operator deletes (or detaches) the claims. Only while fully stopped (400 "
        "StorageStatusImmutableUnlessStopped otherwise); on Cleared storage, 202 and nothing "
        "changes. Progress: poll GET until storage_status is Cleared. Cannot be cancelled.",
        "patch",
        Success(202, "Action is accepted and is being performed"),
        clear,
        not_found=True,
        bad_request=True,
    ),
    Route(
        "POST",
        f"{_PIPELINE}/start",
        "post_pipeline_start",
        "Start the pipeline",
        "Sets spec.desiredState to Running. 400 CannotStartWhileClearingStorage while "
        "storage is Clearing.",
        "patch",
        Success(202, "Action is accepted and is being performed"),
        start,
        query=(
            QueryParam("initial", ("running",), "running", "Initial runtime state: running."),
            QueryParam("dismiss_error", _BOOL, "true", "Accepted; errors need no dismissal."),
        ),
        not_found=True,
        bad_request=True,
    ),
    Route(
        "POST",
        f"{_PIPELINE}/stop",
        "post_pipeline_stop",
        "Stop the pipeline",
        "Sets spec.desiredState to Stopped; storage is kept. The pipeline's pod gets its "
        "grace period (spec.terminationGracePeriodSeconds) to take its last checkpoint and "
        "exit; force=true also sets the annotation sluice.dev/force-stop, and the pod gets "
        "1 second (no checkpoint).",
        "patch",
        Success(202, "Action is accepted and is being performed"),
        stop,
        query=(QueryParam("force", _BOOL, "false", "Stop without waiting for a checkpoint."),),
        not_found=True,
    ),
    Route(
        "POST",
        f"{_PIPELINE}/dismiss_error",
        "post_pipeline_dismiss_error",
        "Dismiss the deployment error",
        "Accepted and nothing changes: the operator recomputes the error on every reconcile.",
        "patch",
        Success(200, "Nothing to dismiss: the operator recomputes the error"),
        dismiss_error,
        not_found=True,
    ),
    Route(
        "GET",
        "/v0/config",
        "get_config",
        "Server configuration",
        "Version and edition (the feldera client reads it when connecting), and the "
        "namespace served.",
        "authenticated",
        Success(200, "Configuration", (ServerConfig,)),
        get_config,
        tags=("Configuration",),
    ),
    Route(
        "GET",
        OPENAPI_PATH,
        "get_openapi",
        "This document",
        "The OpenAPI document of exactly the routes served.",
        "public",
        Success(200, "OpenAPI 3.1 document", schema={"type": "object"}),
        get_openapi,
        tags=("Configuration",),
    ),
    Route(
        "GET",
        "/healthz",
        "healthz",
        "Liveness",
        "Answers while the server runs.",
        "public",
        Success(200, "Alive", (Health,)),
        healthz,
        tags=("Configuration",),
    ),
]


# ---- plumbing ---------------------------------------------------------------------------


def _query(route: Route, request: web.Request) -> Query:
    """Documented parameters, validated (400); unknown ones are ignored, as Feldera does."""
    values: Query = {}
    for param in route.query:
        value = request.query.get(param.name, param.default)
        if value not in param.values:
            raise d.invalid_parameter(param.name, value, list(param.values))
        values[param.name] = value
    return values


def _endpoint(route: Route) -> Callable[[web.Request], Awaitable[web.Response]]:
    handler: Handler = route.handler

    async def endpoint(request: web.Request) -> web.Response:
        ctx = request.app[CONTEXT]
        name = request.match_info.get("pipeline_name", "")
        if route.access == "public":
            return await handler(ctx, Call(name, _query(route, request), ""))
        user, digest = await ctx.authorizer.authenticate(request.headers.get("Authorization"))
        if route.named:
            d.check_name(name)  # before authorization: no review for a name that cannot exist
        query = _query(route, request)
        if route.access != "authenticated":
            await ctx.authorizer.authorize(user, digest, route.access, name or None)
        body = await _json_body(request) if route.request_body is not None else None
        return await handler(ctx, Call(name, query, user.username, body))

    return endpoint


async def _json_body(request: web.Request) -> Any:
    try:
        return await request.json()
    except ValueError as error:
        raise d.ApiError(400, "InvalidRequestBody", f"The body is not JSON: {error}", {}) from None


def _error(status: int, code: str, message: str, details: dict[str, Any]) -> web.Response:
    return json_response(d.ApiError(status, code, message, details).body(), status)


@web.middleware
async def errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every error in the seed's shape: ours, the router's (404/405), and the unexpected."""
    try:
        return await handler(request)
    except d.ApiError as error:
        response = json_response(error.body(), error.status)
        if error.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="sluice"'
        return response
    except web.HTTPMethodNotAllowed as error:
        response = _error(
            405,
            "MethodNotAllowed",
            f"Method {request.method} is not allowed on '{request.path}'",
            {"method": request.method, "allowed": sorted(error.allowed_methods)},
        )
        response.headers["Allow"] = ", ".join(sorted(error.allowed_methods))
        return response
    except web.HTTPNotFound:
        return _error(
            404,
            "UnknownEndpoint",
            f"Unknown endpoint '{request.method} {request.path}'",
            {"method": request.method, "path": request.path},
        )
    except web.HTTPException as error:
        if error.status < 400:
            raise
        return _error(error.status, error.reason.replace(" ", ""), error.reason, {})
    except asyncio.CancelledError:
        raise
    except ApiException as error:
        # E.g. the API's own ServiceAccount lacks a permission: say so, without internals.
        LOG.exception("Kubernetes API error in %s %s", request.method, request.path)
        return _error(
            500,
            "KubernetesApiError",
            f"Unexpected error from the Kubernetes API: {error.status} {error.reason}",
            {"status": error.status, "reason": str(error.reason)},
        )
    except Exception as error:
        # Logged with its traceback here; the client gets the shape, never a stack trace.
        LOG.exception("unexpected error in %s %s", request.method, request.path)
        return _error(
            500,
            "InternalError",
            f"Unexpected error: {type(error).__name__}",
            {"method": request.method, "path": request.path},
        )


def create_app(store: PipelineStore, authorizer: Authorizer, namespace: str) -> web.Application:
    app = web.Application(middlewares=[errors])
    openapi = json.dumps(document(ROUTES), indent=2).encode()
    app[CONTEXT] = Context(store, authorizer, namespace, openapi)
    for route in ROUTES:
        app.router.add_route(route.method, route.path, _endpoint(route))
    return app
