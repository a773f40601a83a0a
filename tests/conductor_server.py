"""A small HTTP server speaking the parts of the Conductor API a worker and `register` call.

No Conductor server is installable here, so tests (and benchmarks) run the real
conductor-python TaskHandler against this one. It serves, under a base path (`/api` like
Conductor OSS and Orkes, or `/workflow-server/api` like Oracle MicroTx Workflows):

    POST {base}/token                        only when auth is set; otherwise 404 (open mode)
    GET  {base}/tasks/poll/batch/{type}      hands out queued tasks (long-polls `timeout` ms)
    POST {base}/tasks/update-v2              records the result, answers the next task or 204;
                                             404 when built with update_v2=False
    POST {base}/tasks                        records the result (the SDK's fallback); with
                                             extendLease: true, a lease extension instead
    PUT/POST {base}/metadata/taskdefs        task definitions (one, or a list)
    GET  {base}/metadata/taskdefs/{name}
    POST/PUT {base}/metadata/workflow        workflow definitions (one, or a list)
    GET  {base}/metadata/workflow/{name}

Use:
    with ConductorServer(base="/api") as server:
        ids = server.add_tasks("query_sql", [{"connection_string": "a.db", "query": "SELECT 1"}])
        ... start a worker with CONDUCTOR_SERVER_URL=server.url ...
        server.wait_for_updates(len(ids), timeout=30)
        server.final_updates()  # {taskId: last update body}

With `enforce_response_timeout=True` the server does what Conductor does with a task's
`responseTimeoutSeconds`: a task handed out and then neither updated nor given a lease
extension within that many seconds is timed out (`timed_out`), and a retry with a new taskId,
the same input, workflow instance and reference name is queued (`retries[old] == new`).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Iterable
from urllib.parse import parse_qs, urlsplit

from recording_server import RecordingServer


@dataclass
class Update:
    """One task result the worker sent: through which endpoint, and its JSON body."""

    endpoint: str  # "update-v2" or "v1"
    body: dict[str, Any]
    received_at: float = field(default_factory=time.monotonic)

    @property
    def task_id(self) -> str:
        return self.body.get("taskId", "")

    @property
    def status(self) -> str:
        return self.body.get("status", "")


@dataclass
class Poll:
    task_type: str
    worker_id: str | None
    domain: str | None
    count: int
    handed_out: int


class ConductorServer(RecordingServer):
    """The fake server: a queue of tasks per task type and a record of everything the worker sent."""

    def __init__(
        self,
        base: str = "/api",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        update_v2: bool = True,
        chain: bool = True,
        auth: tuple[str, str] | None = None,
        response_timeout_seconds: int = 300,
        enforce_response_timeout: bool = False,
    ):
        #: Base path the API lives under; the worker's CONDUCTOR_SERVER_URL is `url`.
        super().__init__(host, port)
        self.base = "/" + base.strip("/")
        #: False makes update-v2 answer 404, so the SDK falls back to POST {base}/tasks.
        self.update_v2 = update_v2
        #: True: update-v2 answers the next queued task of the same type, like Conductor does.
        self.chain = chain
        #: (key id, secret): POST /token hands a token that every other call must carry.
        self.auth = auth
        self.token = uuid.uuid4().hex if auth else None
        self.response_timeout_seconds = response_timeout_seconds

        # Conductor keeps one queue per task type and domain; a poll without a domain reads the default one.
        self._queues: dict[tuple[str, str | None], deque[dict[str, Any]]] = {}
        self._tasks: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1)
        self.updates: list[Update] = []
        self.polls: list[Poll] = []
        self.requests: list[tuple[str, str]] = []
        self.handed_out: list[str] = []
        self.task_defs: dict[str, dict[str, Any]] = {}
        self.workflow_defs: dict[tuple[str, int], dict[str, Any]] = {}
        self.token_requests: list[dict[str, Any]] = []
        #: True: time out tasks not updated within their responseTimeoutSeconds, and queue a retry.
        self.enforce_response_timeout = enforce_response_timeout
        #: Lease extensions received (POST /tasks with extendLease: true); they are not results.
        self.lease_extensions: list[Update] = []
        self.timed_out: list[str] = []
        self.retries: dict[str, str] = {}
        # taskId -> monotonic time by which the worker must update it or extend its lease.
        self._deadlines: dict[str, float] = {}
        self._sweeper_stop = threading.Event()

    def start(self) -> ConductorServer:
        super().start()
        if self.enforce_response_timeout:
            self._sweeper_stop.clear()
            threading.Thread(target=self._sweep, name="response-timeout", daemon=True).start()
        return self

    def stop(self) -> None:
        self._sweeper_stop.set()
        super().stop()

    @property
    def url(self) -> str:
        """The CONDUCTOR_SERVER_URL a worker uses: http://host:port/<base>."""
        return f"http://{self.host}:{self.port}{self.base}"

    # -- tasks -----------------------------------------------------------------------------

    def add_task(
        self, task_type: str, input_data: dict[str, Any], *, task_id: str | None = None, domain: str | None = None, **extra: Any
    ) -> str:
        """Queue one task of `task_type` (in `domain`, if given); return its taskId."""
        return self.add_tasks(task_type, [input_data], task_ids=[task_id] if task_id else None, domain=domain, **extra)[0]

    def add_tasks(
        self,
        task_type: str,
        inputs: Iterable[dict[str, Any]],
        *,
        task_ids: list[str] | None = None,
        domain: str | None = None,
        **extra: Any,
    ) -> list[str]:
        """Queue tasks of `task_type` (in `domain`, if given), one per input; return their taskIds in order."""
        ids = []
        with self._lock:
            queue = self._queues.setdefault((task_type, domain or None), deque())
            for i, input_data in enumerate(inputs):
                n = next(self._ids)
                task_id = task_ids[i] if task_ids else f"task-{n:06d}"
                task = {
                    "taskId": task_id,
                    "taskType": task_type,
                    "taskDefName": task_type,
                    "referenceTaskName": f"{task_type}_ref",
                    "status": "SCHEDULED",
                    "inputData": input_data,
                    "workflowInstanceId": f"wf-{n:06d}",
                    "workflowType": "test_workflow",
                    "responseTimeoutSeconds": self.response_timeout_seconds,
                    "retryCount": 0,
                    "pollCount": 0,
                    "seq": n,
                    "domain": domain,
                    **extra,
                }
                self._tasks[task_id] = task
                queue.append(task)
                ids.append(task_id)
            self._lock.notify_all()
        return ids

    def pending(self, task_type: str | None = None) -> int:
        """Tasks still queued (of one type, or all), whatever their domain."""
        with self._lock:
            return sum(len(q) for (kind, _), q in self._queues.items() if task_type in (None, kind))

    def _take(self, task_type: str, count: int, worker_id: str | None, domain: str | None = None) -> list[dict[str, Any]]:
        queue = self._queues.get((task_type, domain or None))
        taken = []
        while queue and len(taken) < count:
            task = queue.popleft()
            task["status"] = "IN_PROGRESS"
            task["pollCount"] += 1
            task["workerId"] = worker_id
            self.handed_out.append(task["taskId"])
            self._deadlines[task["taskId"]] = time.monotonic() + float(task["responseTimeoutSeconds"])
            taken.append(dict(task))
        return taken

    # -- records ---------------------------------------------------------------------------

    def wait_for_updates(self, count: int, timeout: float = 30.0) -> bool:
        """Wait until at least `count` task updates arrived; False on timeout."""
        return self.wait_for(lambda server: len(server.updates) >= count, timeout)

    def updates_for(self, task_id: str) -> list[Update]:
        with self._lock:
            return [u for u in self.updates if u.task_id == task_id]

    def final_updates(self) -> dict[str, dict[str, Any]]:
        """The last update body of each task that was reported, by taskId."""
        with self._lock:
            return {u.task_id: u.body for u in self.updates}

    def _record_update(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any] | None:
        with self._lock:
            self.updates.append(Update(endpoint, body))
            task = self._tasks.get(body.get("taskId", ""))
            if task is not None:
                if self.enforce_response_timeout and task["status"] == "TIMED_OUT":
                    # Conductor keeps a timed-out task's status; the late result is only recorded.
                    self._lock.notify_all()
                    return None
                task["status"] = body.get("status")
                if body.get("status") == "IN_PROGRESS":
                    self._deadlines[task["taskId"]] = time.monotonic() + float(task["responseTimeoutSeconds"])
                else:
                    self._deadlines.pop(task["taskId"], None)
            next_task = None
            if endpoint == "update-v2" and self.chain and task is not None:
                taken = self._take(task["taskType"], 1, body.get("workerId"), task.get("domain"))
                next_task = taken[0] if taken else None
            self._lock.notify_all()
            return next_task

    def _extend_lease(self, body: dict[str, Any]) -> None:
        with self._lock:
            self.lease_extensions.append(Update("v1", body))
            task = self._tasks.get(body.get("taskId", ""))
            if task is not None and task["taskId"] in self._deadlines:
                self._deadlines[task["taskId"]] = time.monotonic() + float(task["responseTimeoutSeconds"])
            self._lock.notify_all()

    def _sweep(self) -> None:
        while not self._sweeper_stop.wait(0.1):
            now = time.monotonic()
            with self._lock:
                late = [task_id for task_id, deadline in self._deadlines.items() if deadline < now]
                for task_id in late:
                    del self._deadlines[task_id]
                    self._tasks[task_id]["status"] = "TIMED_OUT"
                    self.timed_out.append(task_id)
            for task_id in late:
                task = self._tasks[task_id]
                (retry,) = self.add_tasks(
                    task["taskType"],
                    [task["inputData"]],
                    task_ids=[f"{task_id}-retry{task['retryCount'] + 1}"],
                    domain=task.get("domain"),
                    retryCount=task["retryCount"] + 1,
                    retriedTaskId=task_id,
                    # As Conductor: a retry is a new task of the same workflow and reference.
                    workflowInstanceId=task["workflowInstanceId"],
                    referenceTaskName=task["referenceTaskName"],
                )
                with self._lock:
                    self.retries[task_id] = retry
                    self._lock.notify_all()


class _Handler(BaseHTTPRequestHandler):
    fake: ConductorServer
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's HTTP client expects
    # Headers and body go out in two writes; without TCP_NODELAY, Nagle's algorithm and delayed
    # ACKs hold each response back for about 40 ms.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # the tests read records, not access logs
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        fake = self.fake
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        with fake._lock:
            fake.requests.append((method, parts.path))
        if not parts.path.startswith(fake.base + "/"):
            return self._send(404, {"message": f"not under {fake.base}"})
        path = parts.path[len(fake.base):]
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            return self._send(400, {"message": "body is not JSON"})

        if path == "/token" and method == "POST":
            return self._token(body)
        if fake.auth is not None and self.headers.get("X-Authorization") != fake.token:
            return self._send(401, {"message": "token invalid", "error": "INVALID_TOKEN"})

        if method == "GET" and path.startswith("/tasks/poll/batch/"):
            return self._batch_poll(path.rsplit("/", 1)[1], query)
        if method == "POST" and path == "/tasks/update-v2":
            if not fake.update_v2:
                return self._send(404, {"message": "no such endpoint"})
            next_task = fake._record_update("update-v2", body)
            return self._send(200, next_task) if next_task else self._send(204, None)
        if method == "POST" and path == "/tasks" and isinstance(body, dict) and body.get("extendLease"):
            fake._extend_lease(body)
            return self._send(200, body.get("taskId", ""), text=True)
        if method == "POST" and path == "/tasks":
            fake._record_update("v1", body)
            return self._send(200, body.get("taskId", ""), text=True)
        if path.startswith("/metadata/"):
            return self._metadata(method, path, query, body)
        return self._send(404, {"message": f"{method} {path} is not served by the test server"})

    def _token(self, body: Any) -> None:
        fake = self.fake
        with fake._lock:
            fake.token_requests.append(body)
        if fake.auth is None:
            return self._send(404, {"message": "no auth in this server"})
        if not isinstance(body, dict) or (body.get("keyId"), body.get("keySecret")) != fake.auth:
            return self._send(401, {"message": "bad credentials"})
        return self._send(200, {"token": fake.token})

    def _batch_poll(self, task_type: str, query: dict[str, str]) -> None:
        fake = self.fake
        count = max(1, int(query.get("count", "1")))
        timeout = int(query.get("timeout", "100")) / 1000
        deadline = time.monotonic() + timeout
        with fake._lock:
            domain = query.get("domain") or None
            while not fake._queues.get((task_type, domain)) and fake._httpd is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                fake._lock.wait(remaining)
            tasks = fake._take(task_type, count, query.get("workerid"), domain)
            fake.polls.append(Poll(task_type, query.get("workerid"), query.get("domain"), count, len(tasks)))
        self._send(200, tasks)

    def _metadata(self, method: str, path: str, query: dict[str, str], body: Any) -> None:
        fake = self.fake
        with fake._lock:
            if path == "/metadata/taskdefs" and method in ("PUT", "POST"):
                for task_def in body if isinstance(body, list) else [body]:
                    fake.task_defs[task_def["name"]] = task_def
                return self._send(200, None)
            if path.startswith("/metadata/taskdefs/") and method == "GET":
                task_def = fake.task_defs.get(path.rsplit("/", 1)[1])
                return self._send(200, task_def) if task_def else self._send(404, {"message": "no such task"})
            if path == "/metadata/workflow" and method in ("PUT", "POST"):
                overwrite = query.get("overwrite", "true").lower() == "true"
                for workflow in body if isinstance(body, list) else [body]:
                    key = (workflow["name"], int(workflow.get("version") or 1))
                    if key in fake.workflow_defs and method == "POST" and not overwrite:
                        return self._send(409, {"message": f"workflow {key[0]} v{key[1]} exists"})
                    fake.workflow_defs[key] = workflow
                return self._send(200, None)
            if path.startswith("/metadata/workflow/") and method == "GET":
                name = path.split("/")[3]
                versions = [v for (n, v) in fake.workflow_defs if n == name]
                if not versions:
                    return self._send(404, {"message": f"no workflow {name}"})
                version = int(query.get("version") or max(versions))
                workflow = fake.workflow_defs.get((name, version))
                return self._send(200, workflow) if workflow else self._send(404, {"message": "no such version"})
        return self._send(404, {"message": f"{method} {path} is not served by the test server"})

    def _send(self, status: int, payload: Any, *, text: bool = False) -> None:
        if status == 204:
            data = b""
        elif text:
            data = str(payload).encode()
        else:
            data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain" if text else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data:
            self.wfile.write(data)


ConductorServer.handler = _Handler
