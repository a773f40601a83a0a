"""Structured logs: `sqladapter worker --log-format json` (or SQLADAPTER_LOG_FORMAT=json).

Every line on stderr is then one JSON object: the worker's own lines, the SDK's, and one line
per task with its ids, task name, dialect, status, time and error type. A task line never
holds the query, its parameters, the error message (databases quote values from the
parameters in their messages) or a connection's URL; the task's result carries the message.
Other lines pass through `redact`, which takes passwords out of URLs. An exception is written
as its type and stack frames, without its message, for the same reason.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import traceback
from typing import Any, Callable

from .errors import redact

#: Environment variable of the log format, the same as --log-format.
FORMAT_VARIABLE = "SQLADAPTER_LOG_FORMAT"
FORMATS = ("text", "json")
TASK_LOGGER = "sqladapter.task"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, pid, message, and the record's task fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": redact(record.getMessage()),
        }
        fields = getattr(record, "sqladapter", None)
        if fields:
            entry.update(fields)
        if record.exc_info and record.exc_info[0] is not None:
            entry["exception"] = {
                "type": record.exc_info[0].__name__,
                "frames": [f"{f.filename}:{f.lineno} in {f.name}" for f in traceback.extract_tb(record.exc_info[2])],
            }
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure(log_format: str, level: int | str) -> None:
    """Send this process's log records to stderr in `log_format`; "text" leaves logging as it is."""
    if log_format != "json":
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    # The SDK's basicConfig() adds its text handler only to a root logger that has none.
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)


def json_enabled() -> bool:
    """Whether this process logs JSON: its root logger has the handler `configure` installs."""
    return any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers)


def announcer(logger: str = "sqladapter.worker") -> Callable[[str], None]:
    """A function writing one line as a JSON record to stderr, whatever the log level (startup, stop)."""
    formatter = JsonFormatter()

    def announce(line: str) -> None:
        record = logging.LogRecord(logger, logging.INFO, __file__, 0, line, None, None)
        sys.stderr.write(formatter.format(record) + "\n")
        sys.stderr.flush()

    return announce


_task_log = logging.getLogger(TASK_LOGGER)


def task(
    *,
    task_id: str | None,
    workflow_id: str | None,
    task_name: str,
    dialect: str,
    status: str,
    elapsed_ms: float,
    error_type: str | None,
    rows: int | None,
    truncated: bool | None,
) -> None:
    """The one line logged per task (JSON format only)."""
    fields = {
        "task_id": task_id,
        "workflow_id": workflow_id,
        "task_name": task_name,
        "dialect": dialect,
        "status": status,
        "elapsed_ms": round(elapsed_ms, 3),
        "error_type": error_type,
        "rows": rows,
        "truncated": truncated,
    }
    _task_log.info("task %s", status.lower(), extra={"sqladapter": fields})
