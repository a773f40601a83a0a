"""The hostile SQL corpus (`hostile_sql.json`) and the files outside the data directory it aims at.

Each entry is one statement a task might carry to write, read what it must not, hold a lock,
change a setting or run without end, with the dialect names it applies to, what must happen
(`refused`: a terminal error; `timeout`: a retryable time-limit error) and why it is there.
The statements name the kit's tables (`people`, `audit`) and these placeholders:

    {outside}      a world-writable directory outside the data directory (nothing may appear in it)
    {secret}       a file outside the data directory whose text no error may show
    {secret_csv}   the same secret as CSV, {secret_json} as JSON
    {escape_link}  a symlink inside the data directory pointing at {secret}
    {data_dir}     the data directory
    {database}     the server database's name

An entry's tags are its dialect names, plus `common` when it names all four dialects this
project ships (SQLite, DuckDB, MySQL/MariaDB, PostgreSQL): those are plain SQL any database
must refuse. A plugin chooses the tags that apply to it (`Database.hostile_tags`).
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

__all__ = ["CORPUS_PATH", "Outside", "applicable", "corpus", "make_outside", "render", "tags"]

CORPUS_PATH = Path(__file__).with_name("hostile_sql.json")
SHIPPED = frozenset({"sqlite", "duckdb", "mysql", "postgresql"})
EXPECTATIONS = frozenset({"refused", "timeout"})


@lru_cache(maxsize=1)
def corpus() -> tuple[dict[str, Any], ...]:
    """Every entry of the corpus, in file order."""
    return tuple(json.loads(CORPUS_PATH.read_text(encoding="utf-8")))


def tags(entry: dict[str, Any]) -> frozenset[str]:
    """The tags an entry applies to: its dialects, and `common` if it names all four shipped ones."""
    names = frozenset(entry["dialects"])
    return names | {"common"} if SHIPPED <= names else names


def applicable(wanted: Iterable[str]) -> list[dict[str, Any]]:
    """The entries with at least one of the `wanted` tags."""
    wanted = frozenset(wanted)
    return [entry for entry in corpus() if tags(entry) & wanted]


@dataclass
class Outside:
    """Files outside the data directory: what hostile statements try to read or write."""

    root: Path
    out: Path
    secret: Path
    secret_csv: Path
    secret_json: Path
    marker: str

    def listing(self) -> list[tuple[str, int]]:
        """Every file under the writable directory, with its size."""
        found = []
        for dirpath, dirnames, filenames in os.walk(self.out):
            for name in dirnames + filenames:
                path = Path(dirpath) / name
                found.append((str(path.relative_to(self.out)), path.lstat().st_size))
        return sorted(found)

    def remove(self) -> None:
        for dirpath, dirnames, filenames in os.walk(self.root, topdown=False):
            for name in filenames:
                (Path(dirpath) / name).unlink()
            for name in dirnames:
                path = Path(dirpath) / name
                path.unlink() if path.is_symlink() else path.rmdir()
        self.root.rmdir()


def make_outside() -> Outside:
    """A fresh temporary folder with the secret files and the writable directory.

    Not under pytest's tmp_path: a database server's own process must reach it, and pytest
    makes its folders readable by their owner only. The writable directory is world-writable
    so that a server process a statement slipped past would succeed, and the kit would see it.
    """
    root = Path(tempfile.mkdtemp(prefix="sqla-kit-outside-"))
    root.chmod(0o755)
    out = root / "out"
    out.mkdir()
    out.chmod(0o777)
    marker = "SQLA-SECRET-" + secrets.token_hex(8)
    secret = root / "secret.txt"
    secret.write_text(marker + "\n")
    secret_csv = root / "secret.csv"
    secret_csv.write_text(f"marker\n{marker}\n")
    secret_json = root / "secret.json"
    secret_json.write_text(f'{{"marker": "{marker}"}}\n')
    for path in (secret, secret_csv, secret_json):
        path.chmod(0o644)
    return Outside(root, out, secret, secret_csv, secret_json, marker)


def render(sql: str, outside: Outside, data_dir: Path, database: str) -> str:
    """The statement with its placeholders filled in."""
    for name, value in (
        ("{outside}", outside.out),
        ("{secret_csv}", outside.secret_csv),
        ("{secret_json}", outside.secret_json),
        ("{secret}", outside.secret),
        ("{escape_link}", data_dir / "escape.txt"),
        ("{data_dir}", data_dir),
        ("{database}", database),
    ):
        sql = sql.replace(name, str(value))
    return sql
