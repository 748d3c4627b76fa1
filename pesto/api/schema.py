"""The OpenAPI side of the routes: the API's own small shapes, and helpers
that hand Litestar the wire model (pesto.models) to generate the document from.

The execute request and its results are declared once, in pesto.models; the
shapes here are the ones only the HTTP layer has (job views, errors, lists).
`tests/api/test_openapi.py` checks that what the server sends decodes into them.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
import msgspec.inspect
from litestar.di import Provide
# Litestar's own generator for msgspec Structs (not exported elsewhere);
# tests/api/test_openapi.py notices if a Litestar upgrade moves it.
from litestar._openapi.schema_generation.plugins import StructSchemaPlugin
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Schema
from litestar.typing import FieldDefinition

from pesto.models import Answer, ExecuteResult


class WireSchemaPlugin(StructSchemaPlugin):
    """Documents msgspec Structs as the server reads and writes them: a Struct
    that refuses unknown fields says so (`additionalProperties: false`), and an
    answer of the wire model has every field (required), whatever defaults
    the Python side gives them."""

    def to_openapi_schema(self, field_definition: FieldDefinition,
                          schema_creator: Any) -> Schema:
        schema = super().to_openapi_schema(field_definition, schema_creator)
        shape = field_definition.type_
        if msgspec.inspect.type_info(shape).forbid_unknown_fields:
            schema.additional_properties = False
        if issubclass(shape, Answer):
            schema.required = sorted(f.encode_name for f in msgspec.structs.fields(shape))
        return schema


class JobCreated(msgspec.Struct):
    id: str
    status: Literal["queued"]


class BatchCreated(msgspec.Struct):
    jobs: list[JobCreated]


class ErrorBody(msgspec.Struct):
    code: str
    message: str
    details: list[str] | None = None
    hint: str | None = None


class JobError(msgspec.Struct):
    code: str
    message: str


class JobView(msgspec.Struct, rename="camel"):
    id: str
    status: Literal["queued", "running", "completed", "failed", "cancelled"]
    created_at: str
    started_at: str | None
    finished_at: str | None
    # A job with testCases has a JudgeResult here (msgspec cannot document
    # an untagged union of the two; tests/api/test_judging.py checks both).
    result: ExecuteResult | None
    error: JobError | None


class JobList(msgspec.Struct):
    jobs: list[JobView | None]


class RuntimeDoc(msgspec.Struct):
    language: str
    version: str
    aliases: list[str]
    compiled: bool


class RuntimeList(msgspec.Struct):
    runtime: list[RuntimeDoc]


class Pong(msgspec.Struct):
    message: str


class Health(msgspec.Struct):
    status: str


def body_of(shape: type) -> dict[str, Provide]:
    """Handler dependencies that document `shape` as the JSON body, generated from it.

    The handlers read the raw body themselves, so that every failure gets the
    API's own code and text (pesto.validation). Litestar's OpenAPI generator
    takes a handler's body from a `data` parameter of the handler or of any of
    its dependencies: this dependency has one, and no handler asks for it, so
    Litestar documents the body from `shape` and never parses a request with it.
    """
    def documented(data: Any) -> None:
        raise AssertionError("never called: the handler reads its body itself")
    documented.__annotations__ = {"data": shape, "return": None}
    return {"documented_body": Provide(documented, sync_to_thread=False)}


def errors(*statuses: int) -> dict[int, ResponseSpec]:
    return {status: ResponseSpec(ErrorBody, generate_examples=False,
                                 description="error: {code, message[, details][, hint]}")
            for status in statuses}


def ok(container: type, description: str) -> ResponseSpec:
    return ResponseSpec(container, generate_examples=False, description=description)
