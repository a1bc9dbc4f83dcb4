"""The OpenAPI 3.1 document of the routes `create_app` serves (`GET /openapi.json`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from turnkit.types import (
    AgentAbortRequest,
    AgentAbortResponse,
    AgentInit,
    AgentInput,
    AgentOutput,
    AgentStreamChunk,
    ErrorInfo,
    GetSnapshotRequest,
    SessionSnapshot,
)

__all__ = ["openapi_document"]

_MODELS: list[type[BaseModel]] = [
    AgentInput,
    AgentInit,
    AgentOutput,
    AgentStreamChunk,
    SessionSnapshot,
    GetSnapshotRequest,
    AgentAbortRequest,
    AgentAbortResponse,
    ErrorInfo,
]
_REF = "#/components/schemas/"


def _components() -> dict[str, Any]:
    """The wire types' JSON schemas, and the error body's."""
    _, top = models_json_schema(
        [(m, "validation") for m in _MODELS], by_alias=True, ref_template=_REF + "{model}"
    )
    schemas: dict[str, Any] = top.get("$defs", {})
    schemas["ErrorBody"] = {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["status", "message", "details"],
                "properties": {"status": {"type": "string"}, "message": {"type": "string"}, "details": {}},
            }
        },
    }
    return schemas


def _operation(
    summary: str, data: str, result: str, init: bool = False, stream: bool = False
) -> dict[str, Any]:
    """A POST taking `{"data": <data>[, "init"]}` and answering `{"result": <result>}` or an error."""
    props: dict[str, Any] = {"data": {"$ref": _REF + data}}
    if init:
        props["init"] = {"$ref": _REF + "AgentInit"}
    ok: dict[str, Any] = {
        "application/json": {"schema": {"type": "object", "properties": {"result": {"$ref": _REF + result}}}}
    }
    if stream:
        ok["text/event-stream"] = {"schema": {"type": "string", "description": "data: frames, LF-delimited"}}
    error = {
        "description": "error",
        "content": {"application/json": {"schema": {"$ref": _REF + "ErrorBody"}}},
    }
    op: dict[str, Any] = {
        "summary": summary,
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"type": "object", "required": ["data"], "properties": props}}
            },
        },
        "responses": {"200": {"description": "ok", "content": ok}, "4XX": error, "5XX": error},
    }
    if stream:
        op["parameters"] = [
            {
                "name": "stream",
                "in": "query",
                "required": False,
                "schema": {"type": "string", "enum": ["true", "false"]},
            }
        ]
    return op


def openapi_document(title: str, names: Sequence[str], root_path: str = "") -> dict[str, Any]:
    """The OpenAPI 3.1 document of the routes serving the agents `names`."""
    paths: dict[str, Any] = {
        "/agents": {"get": {"summary": "List the served agents", "responses": {"200": {"description": "ok"}}}}
    }
    for name in names:
        base = f"/agents/{name}"
        paths[base] = {
            "post": _operation(f"Run one turn of {name}", "AgentInput", "AgentOutput", init=True, stream=True)
        }
        paths[base + "/getSnapshot"] = {
            "post": _operation(f"Read a snapshot of {name}", "GetSnapshotRequest", "SessionSnapshot")
        }
        paths[base + "/abort"] = {
            "post": _operation(f"Abort a detached turn of {name}", "AgentAbortRequest", "AgentAbortResponse")
        }
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": "1"},
        "servers": [{"url": root_path or "/"}],
        "paths": paths,
        "components": {"schemas": _components()},
    }
