"""The REST reference: an OpenAPI 3.1 document for `/v1/op/*`, built from the models the
handlers validate and serialize with (rest_models.py), served at `/v1/openapi.json`; in
development a small offline page at `/v1/docs` renders it (no CDN, no external script)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from .rest import OPERATIONS, PROBLEM
from .rest_models import SHAPES, Problem

OPENAPI_PATH = "/v1/openapi.json"
DOCS_PATH = "/v1/docs"
REF = "#/components/schemas/{model}"
DOCS_PAGE = Path(__file__).with_name("openapi_docs.html")

# What any operation may answer, whatever it does.
COMMON_PROBLEMS = {
    400: "The body is not a JSON object",
    401: "Missing, unknown or revoked token",
    403: "The token lacks the operation's scope",
    413: "The body is over 64 KiB",
    429: "Rate limit: retry after Retry-After seconds",
}


def _schema(model: type[BaseModel], components: dict[str, Any]) -> dict[str, str]:
    """A reference to `model`, its schema (and the models it nests) added to components."""
    schema = model.model_json_schema(ref_template=REF, mode="serialization")
    components.update(schema.pop("$defs", {}))
    components[model.__name__] = schema
    return {"$ref": REF.format(model=model.__name__)}


def _parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(mode="validation")
    return [
        {
            "name": name,
            "in": "query",
            "required": name in schema.get("required", []),
            "description": prop.pop("description", ""),
            "schema": {k: v for k, v in prop.items() if k != "title"},
        }
        for name, prop in schema["properties"].items()
    ]


def _problem(description: str, problem: dict[str, str]) -> dict[str, Any]:
    return {"description": description, "content": {PROBLEM: {"schema": problem}}}


CSV_DESCRIPTION = (
    "A header row, then one row per entry, newest first: "
    "id,created_at,kind,amount_credits,balance_delta_credits,available_delta_credits,"
    "balance_after_credits,available_after_credits,description,reference,payment_intent_id"
)


@cache
def build_openapi() -> dict[str, Any]:
    components: dict[str, Any] = {}
    problem = _schema(Problem, components)
    paths: dict[str, Any] = {}
    for name, operation in OPERATIONS.items():
        shape = SHAPES[name]
        responses: dict[str, Any] = {
            "200": {
                "description": "Success",
                "content": {"application/json": {"schema": _schema(shape.answer, components)}},
            }
        }
        problems = {**COMMON_PROBLEMS, **shape.problems}
        if operation.method == "GET":
            if 400 not in shape.problems:
                problems.pop(400)
            problems.pop(413)
        if name == "billing.credits.transactions":
            responses["200"]["content"]["text/csv"] = {
                "schema": {"type": "string", "description": CSV_DESCRIPTION}
            }
        for status, why in sorted(problems.items()):
            responses[str(status)] = _problem(why, problem)
        # Other methods on the path: 405 with Allow.
        responses["405"] = _problem(f"Not {operation.method}: see the Allow header", problem)
        spec: dict[str, Any] = {
            "operationId": name,
            "summary": shape.summary,
            "description": f"Needs a token with the {operation.scope} scope.",
            "tags": [name.split(".")[0]],
            "security": [{"bearer": []}],
            "responses": responses,
        }
        if shape.query is not None:
            spec["parameters"] = _parameters(shape.query)
        if shape.body is not None:
            spec["requestBody"] = {
                "required": False,
                "content": {"application/json": {"schema": _schema(shape.body, components)}},
            }
            if name == "billing.topup":
                spec["parameters"] = [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "description": "Same as the body's idempotency_key (the body wins)",
                        "schema": {"type": "string"},
                    }
                ]
        paths[f"/v1/op/{name}"] = {operation.method.lower(): spec}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "gql-billing REST operations",
            "version": "1",
            "description": (
                "The operation API beside GraphQL: the same services, snake_case fields, "
                "problems as application/problem+json (RFC 9457). 100 credits = A$1."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An organization token (gql-billing token create)",
                }
            },
        },
    }


async def openapi_json(_: Request) -> Response:
    return JSONResponse(build_openapi())


async def docs_page(_: Request) -> Response:
    return HTMLResponse(DOCS_PAGE.read_text())


def openapi_routes(*, development: bool) -> list[Route]:
    routes = [Route(OPENAPI_PATH, openapi_json, methods=["GET"])]
    if development:
        routes.append(Route(DOCS_PATH, docs_page, methods=["GET"]))
    return routes
