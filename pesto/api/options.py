"""One OPTIONS answer per path, naming every method the path takes.

Litestar 2 makes the default OPTIONS handler of a path when the path's
first handler is registered, and never updates its `Allow`: a path served
by two handlers (GET and DELETE /api/jobs/<id>) answered `Allow: GET,
OPTIONS` (litestar-org/litestar#4169, fixed only in Litestar 3; found by
tests/fuzz). Registering our own OPTIONS handler for each path before the
others keeps Litestar from making its own.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from typing import Any

from litestar import Response, route
from litestar.enums import HttpMethod
from litestar.handlers import HTTPRouteHandler


def _answer(allow: str) -> Any:
    def options() -> Response[None]:
        return Response(None, status_code=204, headers={"Allow": allow})
    return options


def options_handlers(handlers: Iterable[Any]) -> list[HTTPRouteHandler]:
    """OPTIONS handlers for every path of these HTTP handlers; register them first."""
    methods: dict[str, set[str]] = collections.defaultdict(lambda: {"OPTIONS"})
    for handler in handlers:
        if isinstance(handler, HTTPRouteHandler):
            for path in handler.paths:
                methods[path].update(handler.http_methods)
    return [route(path, http_method=[HttpMethod.OPTIONS], include_in_schema=False,
                  sync_to_thread=False)(_answer(", ".join(sorted(allowed))))
            for path, allowed in methods.items()]
