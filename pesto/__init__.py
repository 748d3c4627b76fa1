"""Pesto: a self-hosted remote code execution engine."""

__version__ = "0.1.0"
