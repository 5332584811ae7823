"""Node logs: plain text by default, or one JSON object per line (serving.log_format = json).

Events of note (a model served or refused, tokens reloaded, a body refused, a failed request)
are logged with ``note``, which attaches region, model, version, generation and request id as
fields; the JSON formatter writes them as keys, the text formatter leaves the line as it was.
Secrets never reach a log line: the node sees only token digests, and logs client names.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

FIELDS = ("region", "model", "version", "generation", "request_id", "client", "status")


def note(logger: logging.Logger, level: int, msg: str, *, exc_info: bool = False, **fields: Any) -> None:
    """Log ``msg`` with ``fields`` (those that are not None) attached for the JSON formatter."""
    if logger.isEnabledFor(level):
        logger.log(level, msg, exc_info=exc_info, extra={"ebm": {k: v for k, v in fields.items() if v is not None}})


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", <fields>, "exc"}``, one line per record."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                               + f".{int(record.msecs):03d}Z",
                               "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage()}
        out.update(getattr(record, "ebm", None) or {})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def configure(log_format: str, level: int = logging.INFO) -> None:
    """Send the node's records (and uvicorn's) to stderr in ``log_format``."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json"
                         else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
