"""What an operator watches: `GET /metrics` and the one place HTTP responses are counted.

`/metrics` is left out of the OpenAPI document: it is for Prometheus, not for
API clients. With `metrics_token` set (PESTO_METRICS_TOKEN) it needs
`Authorization: Bearer <metrics_token>`, since its labels name tokens.
"""

from __future__ import annotations

import hmac
from typing import Any

from litestar import Request, Response, get
from litestar.types import Message, Scope
from prometheus_client import CONTENT_TYPE_LATEST

from pesto.errors import TokenInvalid, TokenMissing
from pesto.metrics import UNMATCHED, Metrics


@get("/metrics", include_in_schema=False)
async def metrics_endpoint(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The Prometheus text exposition. Raises TokenMissing / TokenInvalid (401)
    when a metrics token is configured and not given."""
    services = request.app.state.pesto
    expected: str | None = services.settings.metrics_token
    if expected:
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise TokenMissing("/metrics needs the header Authorization: Bearer <metrics_token>")
        # Constant time: the comparison must not tell how much of a guess was right.
        if not hmac.compare_digest(value.strip().encode(), expected.encode()):
            raise TokenInvalid("the metrics token is wrong")
    return Response(services.metrics.render(), media_type=CONTENT_TYPE_LATEST)


def response_counter(metrics: Metrics):
    """A Litestar `before_send` hook counting each response once, at its start
    message, under its route template (never the raw path: ids would make
    every job its own series)."""

    async def count(message: Message, scope: Scope) -> None:
        if message["type"] == "http.response.start":
            metrics.response(scope.get("method", ""), scope.get("path_template") or UNMATCHED,
                             message["status"])

    return count
