"""The HTTP service: Litestar app factory, routes, auth guard, error mapping."""

from pesto.api.app import create_app

__all__ = ["create_app"]
