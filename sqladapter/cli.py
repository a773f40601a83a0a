"""The `sqladapter` command: each subcommand a thin shell over the library."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from . import __version__
from .errors import SqlAdapterError


def _fail(exc: SqlAdapterError) -> None:
    kind = "retryable" if exc.retryable else "terminal"
    click.echo(f"error ({exc.type}, {kind}): {exc.message}", err=True)
    sys.exit(2 if not exc.retryable else 3)


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


@click.group()
@click.version_option(__version__, prog_name="sqladapter")
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
@click.option("--fetch", type=click.Choice(["rows", "one", "value"]), help="All rows (default), the first row, or its first value.")
def query(connection, sql, params, params_json, max_rows, timeout_ms, shape, fetch) -> None:
    """Run SQL against CONNECTION and print the output JSON.

    CONNECTION is a URL (sqlite:///fake_people.db), a database file path (fake_people.db),
    or @NAME for the named connection SQLADAPTER_CONNECTION_NAME.
    """
    from .query import run_query

    task_input: dict[str, Any] = {**_connection_input(connection), "query": sql}
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
    optional = {"parameters": parameters, "max_rows": max_rows, "timeout_ms": timeout_ms, "shape": shape, "fetch": fetch}
    task_input.update({k: v for k, v in optional.items() if v is not None})
    try:
        _print_json(run_query(task_input))
    except SqlAdapterError as exc:
        _fail(exc)


@cli.command()
@click.option("--all", "include_builtins", is_flag=True, help="Include the built-in plugins.")
def plugins(include_builtins: bool) -> None:
    """List installed plugins and the dialects they provide, as JSON."""
    from .plugins import list_plugins

    _print_json(list_plugins(include_builtins))


@cli.command()
@click.argument("connection", required=False)
@click.option("--force", is_flag=True, help="Drop and recreate a table that already exists.")
def seed(connection: str | None, force: bool) -> None:
    """Create the demo people table in CONNECTION (default fake_people.db)."""
    from .seed import seed as run_seed

    target = _connection_input(connection) if connection else {}
    try:
        result = run_seed(**target, force=force)
    except SqlAdapterError as exc:
        _fail(exc)
    click.echo(result.summary())


def main() -> None:
    cli()
