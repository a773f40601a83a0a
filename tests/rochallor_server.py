"""A small HTTP server speaking the Rochallor engine's job API, for running the real workflow_sdk Runner.

    POST /v1/jobs/poll           {"workerId","jobTypes","maxJobs","leaseSeconds"} -> {"jobs": [...]}
    POST /v1/jobs/{id}/complete  {"workerId","variables"}                          -> 204
    POST /v1/jobs/{id}/fail      {"workerId","errorMessage","retryable"}           -> 204

Use:
    with RochallorServer() as server:
        job_id = server.add_job("query_sql", {"connection_string": "a.db", "query": "SELECT 1"})
        ... run `sqladapter worker --engine rochallor --url server.url` ...
        server.wait_for_results(1)
        server.results[job_id]  # ("complete", body) or ("fail", body)
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import time
from collections import deque
from http.server import BaseHTTPRequestHandler
from typing import Any

from recording_server import RecordingServer


class RochallorServer(RecordingServer):
    """Queued jobs by type, handed out by poll; completions and failures recorded by job id."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, lease_seconds: int = 300):
        super().__init__(host, port)
        self.lease_seconds = lease_seconds
        self._queue: deque[dict[str, Any]] = deque()
        self._ids = itertools.count(1)
        self.handed_out: list[str] = []
        self.results: dict[str, tuple[str, dict[str, Any]]] = {}
        self.callbacks: list[tuple[str, str, dict[str, Any]]] = []
        self.reported_at: dict[str, float] = {}
        self.polls: list[dict[str, Any]] = []

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def add_job(self, job_type: str, variables: dict[str, Any], **fields: Any) -> str:
        """Queue a job of `job_type` whose instance has `variables` (and `fields` set on the job,
        such as the instanceId of a retried step); return its id."""
        with self._lock:
            n = next(self._ids)
            job = {
                "id": f"job-{n:05d}",
                "jobType": job_type,
                "instanceId": f"instance-{n:05d}",
                "stepId": "sql",
                "stepExecutionId": f"step-{n:05d}",
                "retriesRemaining": 3,
                "variables": variables,
                **fields,
            }
            self._queue.append(job)
            return job["id"]

    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def wait_for_results(self, count: int, timeout: float = 30.0) -> bool:
        """Wait until `count` jobs were completed or failed; False on timeout."""
        return self.wait_for(lambda server: len(server.results) >= count, timeout)

    def _poll(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        with self._lock:
            self.polls.append(body)
            types = set(body.get("jobTypes") or [])
            taken, kept = [], deque()
            while self._queue:
                job = self._queue.popleft()
                if job["jobType"] in types and len(taken) < int(body.get("maxJobs") or 1):
                    taken.append(job)
                else:
                    kept.append(job)
            self._queue = kept
            lease = int(body.get("leaseSeconds") or 0) or self.lease_seconds
            expires = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=lease)
            for job in taken:
                job["lockExpiresAt"] = expires.isoformat().replace("+00:00", "Z")
                self.handed_out.append(job["id"])
            return taken

    def _callback(self, job_id: str, kind: str, body: dict[str, Any]) -> None:
        with self._lock:
            self.callbacks.append((job_id, kind, body))
            self.results[job_id] = (kind, body)
            self.reported_at[job_id] = time.monotonic()
            self._lock.notify_all()


class _Handler(BaseHTTPRequestHandler):
    fake: RochallorServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; without TCP_NODELAY, Nagle's algorithm and delayed
    # ACKs hold each response back for about 40 ms.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        parts = self.path.split("?")[0].strip("/").split("/")
        if parts == ["v1", "jobs", "poll"]:
            return self._send(200, {"jobs": self.fake._poll(body)})
        if len(parts) == 4 and parts[:2] == ["v1", "jobs"] and parts[3] in ("complete", "fail"):
            self.fake._callback(parts[2], parts[3], body)
            return self._send(204, None)
        return self._send(404, {"message": f"POST {self.path} is not served by the test server"})

    def _send(self, status: int, payload: Any) -> None:
        data = b"" if status == 204 else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data:
            self.wfile.write(data)


RochallorServer.handler = _Handler
