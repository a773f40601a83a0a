"""Tasks per second through the real conductor-python TaskHandler (filled in below)."""

from __future__ import annotations

from typing import Any


def bench(*, required: bool, quick: bool) -> tuple[list[dict[str, Any]], list[str]]:
    return [], ["through the SDK: the Conductor worker and tests/conductor_server.py are not committed yet"]
