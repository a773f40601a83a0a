"""Deadlines that hold whatever the database does: a query past its limit is ended from outside.

Each dialect's own time limit (statement_timeout, max_statement_time, a progress handler, an
interrupt) stops almost every query. Some work happens inside one function call that never
looks at the limit (a string search over megabytes), and then the server runs on. One daemon
thread per `Runtime` watches every running query; at `timeout_ms + GRACE_SECONDS` it asks the dialect to
cancel the statement from outside (`Dialect.cancel`), and one grace period later to end the
whole session. The task then reports a time-limit error: it ends within
`timeout_ms + 2 * GRACE_SECONDS` plus the time the database takes to act on the cancel.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from typing import Callable

log = logging.getLogger("sqladapter")

#: How long past its time limit a query may run before the worker ends it from outside.
GRACE_SECONDS = 0.5


class Overrun:
    """What the watchdog did to one query: nothing, cancelled it, or ended its session."""

    __slots__ = ("stage",)

    def __init__(self) -> None:
        self.stage = 0  # 0: within its limit; 1: statement cancelled; 2: session ended


class Watchdog:
    """One daemon thread calling each watched query's `act(stage)` once its deadline passed.

    A thread per query would cost more than a point lookup; a heap of deadlines costs a push
    and a pop. By default `act` gets stage 1 at the deadline and stage 2 a grace later, each on
    a thread of its own; a dialect's own time limit may instead act on this thread, under the
    lock, and again every few milliseconds until released (DuckDB's interrupt).
    """

    def __init__(self, name: str = "sqladapter-deadlines") -> None:
        self._name = name
        self._condition = threading.Condition()
        self._heap: list[tuple[float, int]] = []
        self._watched: dict[int, tuple[Callable[[int], None], Overrun, float, int | None, bool]] = {}
        self._tokens = itertools.count()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def watch(
        self,
        deadline: float,
        act: Callable[[int], None],
        *,
        every: float = GRACE_SECONDS,
        stages: int | None = 2,
        inline: bool = False,
    ) -> tuple[int, Overrun]:
        """Call `act(1)` at `deadline` (time.monotonic), then `act(2)`, ... `every` seconds apart,
        `stages` times in all (None: until released), unless released first.

        With `inline`, `act` runs on the watchdog's thread under its lock, so once `release`
        returns it is not called again; it must be quick and must not block.
        """
        token = next(self._tokens)
        overrun = Overrun()
        with self._condition:
            self._watched[token] = (act, overrun, every, stages, inline)
            heapq.heappush(self._heap, (deadline, token))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, args=(self._stop,), name=self._name, daemon=True)
                self._thread.start()
            if self._heap[0][1] == token:
                self._condition.notify()
        return token, overrun

    def release(self, token: int) -> None:
        """Stop watching; with `inline`, once this returns `act` is not called for it again."""
        with self._condition:
            self._watched.pop(token, None)
            if len(self._heap) > 64 and len(self._heap) > 4 * len(self._watched):
                self._heap = [entry for entry in self._heap if entry[1] in self._watched]
                heapq.heapify(self._heap)

    def close(self) -> None:
        """Stop watching everything and let the thread end; a later `watch` starts it again."""
        with self._condition:
            self._watched.clear()
            self._heap.clear()
            self._stop.set()
            self._stop = threading.Event()  # for the thread a later watch() starts
            thread, self._thread = self._thread, None
            self._condition.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join(1.0)

    def _run(self, stop: threading.Event) -> None:
        with self._condition:
            while not stop.is_set():
                while self._heap and self._heap[0][1] not in self._watched:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._condition.wait()
                    continue
                deadline, token = self._heap[0]
                delay = deadline - time.monotonic()
                if delay > 0:
                    self._condition.wait(delay)
                    continue
                heapq.heappop(self._heap)
                act, overrun, every, stages, inline = self._watched[token]
                overrun.stage += 1
                if stages is None or overrun.stage < stages:
                    heapq.heappush(self._heap, (time.monotonic() + every, token))
                else:
                    del self._watched[token]
                if inline:
                    _act(act, overrun.stage)
                else:
                    # Cancelling opens a connection to the server: never under the lock, never on
                    # this thread, so one slow server cannot delay every other query's deadline.
                    threading.Thread(target=_act, args=(act, overrun.stage), name="sqladapter-cancel", daemon=True).start()
                # This daemon thread outlives the interpreter's cleanup; holding `act` (and the
                # connection it names) while it waits would keep driver objects alive past shutdown.
                del act


def _act(act: Callable[[int], None], stage: int) -> None:
    try:
        act(stage)
    except Exception:
        log.warning("could not end a query past its time limit (stage %d)", stage, exc_info=True)
