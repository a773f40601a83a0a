"""The part the fake engine servers share: listen on a free port in a thread, record, wait."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


class RecordingServer:
    """An HTTP server in a background thread; subclasses record requests under `_lock`."""

    #: The request handler; it reaches the server object as `self.fake`.
    handler: type[BaseHTTPRequestHandler]

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.host = host
        self.port = port
        # Changes to the records notify waiters, so `wait_for` wakes as soon as they hold.
        self._lock = threading.Condition()
        self._httpd: ThreadingHTTPServer | None = None

    def start(self) -> Any:
        """Listen on host:port (port 0 picks a free one) in a background thread."""
        handler = type("Handler", (self.handler,), {"fake": self})
        self._httpd = ThreadingHTTPServer((self.host, self.port), handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        threading.Thread(target=self._httpd.serve_forever, name=type(self).__name__, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop listening; the records stay readable."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        with self._lock:
            self._lock.notify_all()

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_for(self, predicate: Callable[[Any], bool], timeout: float = 30.0) -> bool:
        """Wait until predicate(server) is true; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(min(remaining, 0.2))
            return True
