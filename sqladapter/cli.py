"""The `sqladapter` command: each subcommand a thin shell over the library.

Each subcommand imports what it needs when it runs, so `sqladapter --help` and `--version`
start without loading SQLAlchemy, sqlglot or the SDKs (tests/test_cli.py checks it).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from .errors import SqlAdapterError


def _fail(exc: SqlAdapterError) -> None:
    kind = "retryable" if exc.retryable else "terminal"
    click.echo(f"error ({exc.type}, {kind}): {exc.message}", err=True)
    sys.exit(2 if not exc.retryable else 3)


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    # Read from the distribution's metadata only when asked: importing importlib.metadata
    # costs about as much as the rest of the command's start.
    if not value or ctx.resilient_parsing:
        return
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("sqladapter")
    except PackageNotFoundError:  # python -m sqladapter from a source tree that is not installed
        installed = "0.0.0"
    click.echo(f"sqladapter, version {installed}")
    ctx.exit()


@click.group()
@click.option(
    "--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version, help="Show the version and exit."
)
def cli() -> None:
    """Run parameterized, read-only SQL as a workflow task, and serve it to workflow engines."""


def _connection_input(connection: str) -> dict[str, str]:
    # "@name" picks a named connection; anything else is a URL or a database file path.
    if connection.startswith("@"):
        return {"connection": connection[1:]}
    return {"connection_string": connection}


@cli.command()
@click.argument("connection")
@click.argument("sql")
@click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE", help="Bind :NAME to VALUE (a string).")
@click.option("--params", "params_json", metavar="JSON", help="Parameters as JSON: an object for :name, a list for ?.")
@click.option("--max-rows", type=int, help="Return at most this many rows (default 1000).")
@click.option("--timeout-ms", type=int, help="Stop the query after this many milliseconds (default 30000).")
@click.option("--shape", type=click.Choice(["objects", "arrays"]), help="Rows as objects (default) or arrays.")
@click.option(
    "--fetch", type=click.Choice(["rows", "one", "value"]), help="All rows (default), the first row, or its first value."
)
def query(connection, sql, params, params_json, max_rows, timeout_ms, shape, fetch) -> None:
    """Run SQL against CONNECTION and print the output JSON.

    CONNECTION is a URL (sqlite:///fake_people.db), a database file path (fake_people.db),
    or @NAME for the named connection SQLADAPTER_CONNECTION_NAME.
    """
    from .runtime import run_query

    task_input: dict[str, Any] = {**_connection_input(connection), "query": sql}
    parameters = _parameters(params, params_json)
    optional = {"parameters": parameters, "max_rows": max_rows, "timeout_ms": timeout_ms, "shape": shape, "fetch": fetch}
    task_input.update({k: v for k, v in optional.items() if v is not None})
    try:
        _print_json(run_query(task_input))
    except SqlAdapterError as exc:
        _fail(exc)


def _parameters(params: tuple[str, ...], params_json: str | None) -> Any:
    """The parameters of -p NAME=VALUE options and a --params JSON value, or None."""
    parameters: Any = None
    if params_json:
        try:
            parameters = json.loads(params_json)
        except ValueError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="--params") from None
    if params:
        if parameters is not None and not isinstance(parameters, dict):
            raise click.BadParameter("-p NAME=VALUE cannot be combined with a --params list", param_hint="-p")
        parameters = dict(parameters or {})
        for item in params:
            name, sep, value = item.partition("=")
            if not sep:
                raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="-p")
            parameters[name] = value
    return parameters


def _expected_rows(text: str | None) -> Any:
    # "3" is exactly three rows; "1:5" one to five; "1:" at least one.
    if text is None:
        return None
    low, sep, high = text.partition(":")
    try:
        if not sep:
            return int(low)
        bounds: dict[str, int] = {"min": int(low or 0)}
        if high:
            bounds["max"] = int(high)
        return bounds
    except ValueError:
        raise click.BadParameter(f"{text!r} is not N, MIN:MAX or MIN:", param_hint="--expected-rows") from None


@cli.command()
@click.argument("connection")
@click.argument("sql", nargs=-1, required=True)
@click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE", help="Bind :NAME to VALUE (a string).")
@click.option("--params", "params_json", metavar="JSON", help="Parameters as JSON: an object for :name, a list for ?.")
@click.option(
    "--parameter-sets",
    "sets_json",
    metavar="JSON",
    help="A JSON list of parameter objects (or lists): the statement runs once per set, as one batch.",
)
@click.option(
    "--expected-rows",
    metavar="N|MIN:MAX",
    help="Roll back and fail unless the rows changed are exactly N, or MIN to MAX (MIN: for at least MIN).",
)
@click.option(
    "--idempotency-key",
    metavar="KEY",
    help="Commit KEY with the write in the ledger; the same KEY again prints the stored output, replayed.",
)
@click.option("--timeout-ms", type=int, help="Stop the write after this many milliseconds (default 30000).")
@click.option("--max-rows", type=int, help="Return at most this many RETURNING rows (default 1000).")
def execute(connection, sql, params, params_json, sets_json, expected_rows, idempotency_key, timeout_ms, max_rows) -> None:
    """Run a write (INSERT, UPDATE, DELETE, upsert) on @CONNECTION and print the output JSON.

    CONNECTION is @NAME, a named connection the operator marked writable
    (SQLADAPTER_CONNECTION_NAME_WRITABLE=1). Several SQL arguments run in one transaction,
    all or nothing. Without --idempotency-key the write is not recorded in the ledger.
    """
    from .runtime import default

    parameters = _parameters(params, params_json)
    sets = None
    if sets_json:
        try:
            sets = json.loads(sets_json)
        except ValueError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="--parameter-sets") from None
    task_input: dict[str, Any] = _connection_input(connection)
    if len(sql) == 1:
        task_input["statement"] = sql[0]
        optional: dict[str, Any] = {"parameters": parameters, "parameter_sets": sets}
    else:
        if parameters is not None or sets is not None:
            raise click.UsageError("parameters go with a single statement; for several, run one per command")
        task_input["statements"] = list(sql)
        optional = {}
    optional.update(
        {
            "expected_rows": _expected_rows(expected_rows),
            "idempotency_key": idempotency_key,
            "timeout_ms": timeout_ms,
            "max_rows": max_rows,
        }
    )
    task_input.update({k: v for k, v in optional.items() if v is not None})
    try:
        _print_json(default().execute(task_input))
    except SqlAdapterError as exc:
        _fail(exc)


def _named(connection: str) -> str:
    if not connection.startswith("@"):
        raise click.BadParameter("give a named connection as @NAME", param_hint="CONNECTION")
    return connection[1:]


@cli.group()
def ledger() -> None:
    """The idempotency ledger execute_sql commits each write with, on a writable connection."""


@ledger.command("init")
@click.argument("connection")
def ledger_init(connection: str) -> None:
    """Create the ledger table on @CONNECTION (a writable named connection); harmless when it exists."""
    from . import ledger as ledgers
    from .runtime import default

    name = _named(connection)
    try:
        created = ledgers.init(default(), name)
    except SqlAdapterError as exc:
        _fail(exc)
    click.echo(f"{ledgers.TABLE}: {'created' if created else 'already there'} on @{name}")


@ledger.command("prune")
@click.argument("connection")
@click.option(
    "--older-than",
    type=click.IntRange(min=0),
    metavar="SECONDS",
    help="Delete records older than this (default SQLADAPTER_LEDGER_TTL_SECONDS, 7 days).",
)
def ledger_prune(connection: str, older_than: int | None) -> None:
    """Delete expired records from the ledger on @CONNECTION; a retry after that runs the write again."""
    from . import ledger as ledgers
    from .runtime import default

    name = _named(connection)
    try:
        deleted = ledgers.prune(default(), name, older_than)
    except SqlAdapterError as exc:
        _fail(exc)
    click.echo(f"{ledgers.TABLE}: {deleted} expired record(s) deleted on @{name}")


@cli.command()
@click.option("--all", "include_builtins", is_flag=True, help="Include the built-in plugins.")
def plugins(include_builtins: bool) -> None:
    """List installed plugins and the dialects they provide, as JSON."""
    from .runtime import default

    _print_json(default().plugins(include_builtins))


@cli.command()
@click.argument("connection", required=False)
@click.option(
    "--dataset",
    type=click.Choice(["people", "orders", "all"]),
    default="people",
    show_default=True,
    help="people, orders (seeds people first if missing), or both.",
)
@click.option("--rows", type=click.IntRange(min=1), help="Rows per table (default: 5 people, the tutorial's, and 20 orders).")
@click.option("--random-seed", type=int, default=1, show_default=True, help="Same seed, same rows, on every database.")
@click.option("--force", is_flag=True, help="Drop and recreate a table that already exists.")
def seed(connection: str | None, dataset: str, rows: int | None, random_seed: int, force: bool) -> None:
    """Create demo tables in CONNECTION (default fake_people.db) and print what was done.

    CONNECTION is a URL (duckdb:///demo.duckdb, postgresql://user@host/db), a database file
    path (demo.db, demo.duckdb), or @NAME for the named connection SQLADAPTER_CONNECTION_NAME.
    Tables that exist are left as they are unless --force.
    """
    from .seed import seed as run_seed

    target = _connection_input(connection) if connection else {}
    bars: dict[str, Any] = {}
    # A bar only where someone watches and there is something to wait for.
    show_bars = sys.stdout.isatty() and (rows or 0) >= 100_000

    def progress(table: str, done: int, total: int) -> None:
        bar = bars.get(table)
        if bar is None:
            bar = bars[table] = click.progressbar(length=total, label=f"seeding {table}")
            bar.__enter__()
        bar.update(done - bar.pos)
        if done >= total:
            bar.__exit__(None, None, None)

    try:
        results = run_seed(
            **target,  # type: ignore[arg-type]
            dataset=dataset,
            rows=rows,
            random_seed=random_seed,
            force=force,
            progress=progress if show_bars else None,
        )
    except SqlAdapterError as exc:
        _fail(exc)
    finally:
        for bar in bars.values():
            if not bar.finished:
                bar.__exit__(None, None, None)
    for result in results:
        click.echo(result.summary())


def _task_names(extra: tuple[str, ...]) -> list[str]:
    from .engines import TASK_NAME

    return list(dict.fromkeys((TASK_NAME, *extra)))


@cli.command()
@click.option(
    "--engine",
    type=click.Choice(["conductor", "rochallor"]),
    default="conductor",
    show_default=True,
    help="The workflow engine to serve.",
)
@click.option(
    "--task-name",
    "task_names",
    multiple=True,
    metavar="NAME",
    help="Also serve task type NAME (repeatable); --task-name query_sqlite serves the tutorial's workflow, "
    "--task-name execute_sql serves writes.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Conductor: tasks run at once per task name and worker process.",
)
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    envvar="SQLADAPTER_PROCESSES",
    show_envvar=True,
    help="Conductor: worker processes per task name, each running --threads tasks at once; each "
    "process has its own interpreter lock, so more of them use more cores.",
)
@click.option("--domain", help="Conductor: poll tasks of this domain only.")
@click.option(
    "--poll-interval",
    type=click.FloatRange(min=1),
    default=100,
    show_default=True,
    metavar="MS",
    help="Milliseconds between polls (Conductor: when the queue is empty; Rochallor: between poll rounds).",
)
@click.option("--register", is_flag=True, help="Conductor: register the task definition(s) at startup.")
@click.option(
    "--owner-email",
    default="sqladapter@example.com",
    show_default=True,
    help="Conductor: ownerEmail of registered definitions (Conductor OSS requires one).",
)
@click.option(
    "--grace-period",
    type=click.FloatRange(min=0),
    default=30,
    show_default=True,
    metavar="SECONDS",
    help="On SIGTERM/SIGINT, how long running tasks may take to finish.",
)
@click.option("--url", help="Rochallor: the engine's base URL.")
@click.option("--worker-id", help="The worker's identity reported to the engine (default: host name).")
@click.option("--parallelism", type=click.IntRange(min=1), default=8, show_default=True, help="Rochallor: jobs run at once.")
@click.option(
    "--result-variable",
    default="sqlResult",
    show_default=True,
    help="Rochallor: the instance variable the output is stored under.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(min=0, max=65535),
    envvar="SQLADAPTER_METRICS_PORT",
    show_envvar=True,
    metavar="PORT",
    help="Conductor: serve Prometheus /metrics, /health and /ready on this port (0: any free port).",
)
@click.option(
    "--metrics-host",
    default="0.0.0.0",
    show_default=True,
    envvar="SQLADAPTER_METRICS_HOST",
    show_envvar=True,
    help="Conductor: the address the metrics port listens on.",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    envvar="SQLADAPTER_LOG_FORMAT",
    show_envvar=True,
    help="Conductor: json writes one JSON object per log line, and one line per task.",
)
def worker(
    engine,
    task_names,
    threads,
    processes,
    domain,
    poll_interval,
    register,
    owner_email,
    grace_period,
    url,
    worker_id,
    parallelism,
    result_variable,
    metrics_port,
    metrics_host,
    log_format,
) -> None:
    """Serve query_sql tasks to a workflow engine until SIGTERM or Ctrl-C.

    Conductor (Conductor OSS, Orkes, Oracle MicroTx Workflows): the server and its auth come
    from CONDUCTOR_SERVER_URL (ending in /api, or /workflow-server/api for MicroTx),
    CONDUCTOR_AUTH_KEY and CONDUCTOR_AUTH_SECRET; the SDK's CONDUCTOR_WORKER_* variables
    override --threads, --domain, --poll-interval and --worker-id.
    """
    names = _task_names(task_names)
    announce = lambda line: click.echo(line, err=True)  # noqa: E731
    _check_named_connections()
    if engine == "rochallor":
        if metrics_port is not None or log_format != "text" or processes != 1:
            raise click.UsageError(
                "--metrics-port, --log-format json and --processes (SQLADAPTER_METRICS_PORT, SQLADAPTER_LOG_FORMAT, "
                "SQLADAPTER_PROCESSES) are for --engine conductor; unset them for Rochallor"
            )
        if not url:
            raise click.UsageError("--engine rochallor needs --url, the Rochallor engine's base URL")
        try:
            from .engines import rochallor
        except ImportError as exc:
            raise click.ClickException(f"{exc}; install the extra: pip install 'sqladapter[rochallor]'") from None
        sys.exit(
            rochallor.serve(
                url,
                names,
                worker_id=worker_id,
                parallelism=parallelism,
                result_variable=result_variable,
                poll_interval=poll_interval / 1000,
                grace_seconds=grace_period,
                announce=announce,
            )
        )
    if os.environ.get("CONDUCTOR_WORKER_ISOLATION", "").strip().lower() == "thread":
        raise click.UsageError(
            "CONDUCTOR_WORKER_ISOLATION=thread is not supported: sqladapter worker stops its worker processes "
            "one by one so running tasks can report; unset it"
        )
    from .engines import conductor

    if log_format == "json":
        from conductor.client.configuration.configuration import Configuration

        from . import logs

        logs.configure("json", Configuration().log_level)
        announce = logs.announcer()
    workers = [
        # One SDK worker per process: the TaskHandler runs each in its own process. The first
        # registers the task definition, if asked; the others would only send it again.
        conductor.make_worker(
            name,
            threads=threads,
            domain=domain,
            poll_interval_ms=poll_interval,
            worker_id=worker_id,
            register=register and index == 0,
            owner_email=owner_email,
        )
        for name in names
        for index in range(processes)
    ]
    try:
        status = conductor.serve(
            workers,
            grace_seconds=grace_period,
            announce=announce,
            metrics_port=metrics_port,
            metrics_host=metrics_host,
            log_format=log_format,
        )
    except OSError as exc:  # the metrics port cannot be opened
        raise click.ClickException(f"{exc}; choose another --metrics-port (SQLADAPTER_METRICS_PORT)") from None
    sys.exit(status)


def _check_named_connections() -> None:
    # A named connection whose URL cannot be read unambiguously would fail every task that
    # uses it: refuse to start instead, saying which one and how to fix it.
    from .runtime import default

    try:
        default().pools.check_named_connections()
    except SqlAdapterError as exc:
        _fail(exc)


@cli.command()
@click.argument("workflow_files", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--task-name", "task_names", multiple=True, metavar="NAME", help="Also register a task definition for NAME (repeatable)."
)
@click.option(
    "--owner-email",
    default="sqladapter@example.com",
    show_default=True,
    help="ownerEmail for definitions that have none (Conductor OSS requires one).",
)
def register(workflow_files, task_names, owner_email) -> None:
    """Create or update the query_sql task definition and workflows on the Conductor server.

    WORKFLOW_FILES default to the workflows shipped in workflows/. Running it again updates
    in place. The server comes from CONDUCTOR_SERVER_URL, CONDUCTOR_AUTH_KEY and CONDUCTOR_AUTH_SECRET.
    """
    from .engines import conductor
    from .engines.conductor_local import load_workflow
    from .engines.conductor_local import workflow_files as shipped

    try:
        workflows = [load_workflow(path) for path in (workflow_files or shipped())]
        done = conductor.register_definitions(_task_names(task_names), workflows, owner_email=owner_email)
    except SqlAdapterError as exc:
        _fail(exc)
    except ConnectionError as exc:
        raise click.ClickException(str(exc)) from None
    for line in done:
        click.echo(f"registered {line}")


@cli.command()
@click.argument("workflow_file", type=click.Path(dir_okay=False))
@click.option("--input", "input_json", metavar="JSON", help="The workflow input, a JSON object.")
@click.option(
    "--task-name",
    "task_names",
    multiple=True,
    metavar="NAME",
    help="Also run SIMPLE tasks of type NAME as query tasks (repeatable), e.g. query_sqlite.",
)
def run(workflow_file, input_json, task_names) -> None:
    """Run a workflow definition locally, without a server, and print what it did as JSON.

    A dry-run aid: SIMPLE query_sql tasks (and --task-name aliases) run in order for real;
    ${workflow.input.x} and ${ref.output.path} inputs and outputParameters are resolved. Other
    task types are refused. Exit status 0 when the workflow completes, 2 or 3 when a task fails
    (terminal or retryable).
    """
    from .engines.conductor_local import run_workflow

    workflow_input: Any = {}
    if input_json:
        try:
            workflow_input = json.loads(input_json)
        except ValueError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="--input") from None
        if not isinstance(workflow_input, dict):
            raise click.BadParameter("the workflow input is a JSON object", param_hint="--input")
    try:
        result = run_workflow(workflow_file, workflow_input, task_names=task_names)
    except SqlAdapterError as exc:
        _fail(exc)
    _print_json(result.to_dict())
    if result.status != "COMPLETED":
        click.echo(f"workflow {result.status}: {result.reason}", err=True)
        sys.exit(3 if result.error and result.error.get("retryable") else 2)


def main() -> None:
    cli()
