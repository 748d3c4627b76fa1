"""Logging set-up of `pesto serve`: plain text (the default) or one JSON object per line.

The JSON form is for log shippers (Loki, Elasticsearch, CloudWatch): each
line carries `time`, `level`, `logger` and `message`, plus the fields a
record was given as `extra={"fields": {...}}` (the job line's id, token
name, language, statuses and times) as keys of their own. Nothing is added
that the text form does not show: never a program's output, never a token
value. Written with the standard library: a formatter is a dozen lines.
"""

from __future__ import annotations

import datetime as dt
import json
import logging

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                entry.setdefault(key, value)   # never overwrite the four above
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        # default=str: a field that is not JSON (a Path, an enum) is its text,
        # never a failed log line.
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure(level: int, fmt: str = "text") -> None:
    """Send every logger (pesto's and uvicorn's) to stderr in the chosen format."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("pesto").setLevel(level)
