"""The read-only check, and the canonical SQL the database runs instead of the caller's text.

A query is turned into a syntax tree by a parser (the database's own where a library has it,
sqlglot otherwise), checked against allowlists, and written out again from that tree. The
database never sees the caller's text: comments are gone, strings, identifiers and
placeholders are written the one way the generator writes them, and a query whose canonical
form does not parse back to the same tree is refused. So a spelling that one parser reads
differently from the other (an escaped identifier, an exotic space after `--`) cannot smuggle
SQL past the check.

What a query may contain is allowed, not denied:
- statement roots and syntax nodes: a fixed set that only reads (`_READ_NODES`);
- functions and table functions: the dialect's allowlist, derived from the database's own
  catalog where it has one (`Dialect.allowed_functions`).
Anything else is refused with a message naming it. The database's own read-only session is
the second layer, enforced by each dialect.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.tokens import TokenType

from .errors import InputError, NotDmlError, NotReadOnlyError, QueryError

if TYPE_CHECKING:
    from .dialect import Dialect

# sqlglot warns on stderr for every statement it parses as an opaque command (EXPLAIN, VACUUM);
# the guard refuses or re-checks those itself, so the warning is noise in a worker's log.
logging.getLogger("sqlglot").setLevel(logging.ERROR)

#: Deepest nesting of parentheses a query may have: the parsers recurse once per level.
MAX_NESTING = 200


def _classes(names: str) -> tuple[type, ...]:
    return tuple(getattr(exp, name) for name in names.split() if hasattr(exp, name))


# Statement roots that only read.
_READ_ROOTS = _classes("Select Union Intersect Except Values Subquery")

# Every syntax node a read-only query is made of. A node of any other class (INSERT, INTO,
# FOR UPDATE, SET, a user variable, a command sqlglot could not parse) is refused, so a
# construct nobody thought of is refused too. Function calls are checked by name instead.
_READ_NODES = _classes(
    # statements and clauses
    "Select Union Intersect Except Values Subquery From Join Where Group Having Qualify Order Ordered "
    "Limit Offset Fetch With CTE Recursive TableAlias Table Lateral Unnest Distinct Window WindowSpec "
    "Cube Rollup GroupingSets Pivot PivotAlias Unpivot TableSample Hint JoinHint "
    # names and values
    "Column Identifier Star Literal Null Boolean Placeholder Alias Aliases Paren Tuple Array Struct "
    "ToMap Map VarMap DataType DataTypeParam Interval IntervalSpan Var Dot Bracket Slice Collate Kwarg PropertyEQ Parameter "
    "SessionParameter National HexString BitString ByteString RawString Columns ColumnPrefix "
    # operators and predicates
    "Not Neg Add Sub Mul Div IntDiv Mod Pow EQ NEQ NullSafeEQ NullSafeNEQ GT GTE LT LTE And Or Xor "
    "Is In Between Like ILike LikeAny ILikeAny SimilarTo RegexpLike RegexpILike Glob Escape Exists Any All "
    "BitwiseAnd BitwiseOr BitwiseXor BitwiseNot BitwiseLeftShift BitwiseRightShift DPipe Distance "
    "JSONKeyValue JSONObject JSONArray ArrayContains ArrayContainsAll ArrayOverlaps JSONExtract JSONExtractScalar JSONBExtract "
    "JSONBExtractScalar JSONPath JSONPathKey JSONPathRoot JSONPathSubscript JSONPathWildcard "
    "JSONPathSlice JSONPathFilter JSONPathScript JSONPathSelector JSONPathUnion JSONPathRecursive "
    "Case If Cast TryCast Extract Lambda Filter WithinGroup IgnoreNulls RespectNulls HavingMax"
)

# What an `execute_sql` statement may be: one INSERT, UPDATE, DELETE or MERGE (upserts are
# INSERT ... ON CONFLICT / ON DUPLICATE KEY UPDATE), made of the read nodes plus the clauses of
# those statements. DDL, SET, CALL, a command sqlglot could not parse: any other root or node
# is refused, as in queries. A write statement appears only as the root, or as the action of a
# MERGE's WHEN: no INSERT hidden in a CTE, no second write inside the first.
_WRITE_ROOTS = _classes("Insert Update Delete Merge")
_WRITE_NODES = _READ_NODES + _classes("Insert Update Delete Merge Schema OnConflict Returning When Whens")

# sqlglot function classes that are syntax of the language rather than calls of a catalog
# function: they write as keywords or operators, not as NAME(...).
_SYNTAX_FUNCTIONS = _classes(
    "And Or Xor Cast TryCast Case If Extract Interval Not Paren Exists Any All Between In "
    "Like ILike Is Lambda Filter DPipe Concat Coalesce Struct Array Tuple Bracket ToMap Map VarMap"
)

# MySQL's SELECT modifiers that only steer this query's plan or cache use. SQL_CALC_FOUND_ROWS
# leaves a count behind for FOUND_ROWS(); HIGH_PRIORITY and friends are not needed to read.
_READ_MODIFIERS = frozenset({"STRAIGHT_JOIN", "SQL_NO_CACHE", "SQL_SMALL_RESULT", "SQL_BIG_RESULT", "SQL_BUFFER_RESULT"})

_CALL = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_$]*)\s*\(")

# EXPLAIN is not parsed by every grammar; its options are checked here and the statement it
# explains is checked like any query.
_EXPLAIN = re.compile(
    r"^\s*explain\b((?:\s+(?:query\s+plan|analyze|verbose|extended|format\s*=?\s*\w+)\b|\s*\([A-Za-z0-9_ ,]*\))*)",
    re.IGNORECASE,
)

_EXPLAIN_WORD = re.compile(r"\s*explain\b", re.IGNORECASE)

_EXECUTABLE_COMMENT = ("!", "M!")

# Characters that no query needs outside its string literals and quoted identifiers, and that
# some parsers read as whitespace while others do not: control characters other than tab and
# newlines, and every space, line or paragraph separator but the ASCII space.
_ALLOWED_CONTROL = frozenset("\t\n\r ")
_AMBIGUOUS_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})


@dataclass(frozen=True)
class Checked:
    """A query that passed the check: its canonical text and what the core needs to bind it."""

    #: The canonical SQL, with named placeholders in the parser's own spelling.
    sql: str
    #: (start, end, name) of each placeholder in `sql`, in order; positional ones are named "_pN".
    spans: tuple[tuple[int, int, str], ...]
    #: "named", "positional", or None.
    style: str | None
    #: `sql` with room for a LIMIT after it (a top-level SELECT without LIMIT, OFFSET, locks).
    limitable: bool
    #: A write statement with a RETURNING clause: it gives rows back.
    returning: bool = False


def first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def check_characters(sql: str, quoted_spans: Iterable[tuple[int, int]]) -> None:
    """Refuse control characters and non-ASCII spaces outside the given quoted spans."""
    if sql.isascii() and not any(c < " " and c not in _ALLOWED_CONTROL for c in sql):
        return
    spans = sorted(quoted_spans)
    position = 0
    for start, end in [*spans, (len(sql), len(sql))]:
        for offset, char in enumerate(sql[position:start], position):
            if char not in _ALLOWED_CONTROL and unicodedata.category(char) in _AMBIGUOUS_CATEGORIES:
                raise NotReadOnlyError(
                    f"the query holds the character U+{ord(char):04X} ({unicodedata.name(char, 'unnamed')}) at "
                    f"offset {offset}, outside any string literal: databases and parsers disagree on what it means; "
                    "use plain spaces and newlines, or put it inside a quoted string"
                )
        position = max(position, end)


def check_nesting(sql: str) -> None:
    """Refuse queries nested deeper than MAX_NESTING, before a recursive parser meets them."""
    depth = deepest = 0
    for char in sql:
        if char == "(":
            depth += 1
            if depth > deepest:
                deepest = depth
        elif char == ")":
            depth -= 1
    if deepest > MAX_NESTING:
        raise InputError(
            f"the query nests parentheses {deepest} deep; at most {MAX_NESTING} are accepted: flatten the expression"
        )


# -- the sqlglot path: SQLite, DuckDB, MySQL/MariaDB --------------------------------------------


_QUOTED_TOKENS = frozenset(
    getattr(TokenType, name)
    for name in "STRING IDENTIFIER NATIONAL_STRING RAW_STRING HEX_STRING BIT_STRING BYTE_STRING HEREDOC_STRING UNICODE_STRING".split()
    if hasattr(TokenType, name)
)


def compile_sqlglot(sql: str, grammar: str, allowed: frozenset[str], dialect: Dialect, *, write: bool = False) -> Checked:
    """Parse `sql` with sqlglot's `grammar`, check it, and write it out canonically.

    With `write`, the statement must be one DML statement (`check_write`) instead of a query.
    """
    glot = sqlglot.Dialect.get_or_raise(grammar)
    check_nesting(sql)
    tokens = _tokenize(glot, sql)
    check_characters(sql, ((t.start, t.end + 1) for t in tokens if t.token_type in _QUOTED_TOKENS))
    # MySQL and MariaDB run the text of /*! ... */ and /*M! ... */ comments as SQL. The
    # canonical text drops comments, so they would never run; the query would not mean
    # what its author wrote, so it is refused with a reason instead.
    if any(c.startswith(_EXECUTABLE_COMMENT) for token in tokens for c in token.comments or ()):
        raise NotReadOnlyError(
            "the query holds an executable comment (/*! ... */ or /*M! ... */), which the server would "
            "run as SQL; remove it or write its contents as plain SQL"
        )
    marker = exp.Placeholder(this="x").sql(dialect=grammar)[0]  # ":" or "$": how this grammar writes a named one
    spans = placeholder_spans(tokens)
    names = [name for _, _, name in spans]
    if names and all(names):
        style = "named"
    elif names and not any(names):
        style = "positional"
        names = [f"_p{i}" for i in range(len(names))]
    elif names:
        raise InputError("the query mixes :name and ? placeholders; use one style")
    else:
        style = None
    # Every placeholder becomes named before parsing, so that its place in the canonical text
    # is known by name whatever order the generator writes the clauses in.
    marked = _replace_spans(sql, spans, [f"{marker}{name}" for name in names])
    explain, body = ("", marked) if write else _split_explain(marked)
    checker = check_write if write else check
    tree = _parse_one(glot, body, grammar, write)
    checker(dialect, tree, allowed)
    # The text that runs is sqlglot's own rendering of the tree, and it must be a fixed point:
    # read back, it is checked again and renders the same. Then the check has seen what runs.
    canonical = tree.sql(dialect=grammar, comments=False)
    reread = _parse_one(glot, canonical, grammar, write)
    checker(dialect, reread, allowed)
    if reread.sql(dialect=grammar, comments=False) != canonical:
        raise QueryError(
            "the query cannot be written out unambiguously for the database; simplify it "
            "(this is a guard against parser differences, not a syntax error)"
        )
    written = placeholder_spans(_tokenize(glot, canonical), marker)
    if sorted(name for _, _, name in written) != sorted(names):
        raise QueryError("unsupported placeholder syntax: use :name (with an object) or ? (with a list)")
    if explain:
        written = [(start + len(explain), end + len(explain), name) for start, end, name in written]
        return Checked(explain + canonical, tuple(written), style, limitable=False)
    returning = write and tree.args.get("returning") is not None
    return Checked(canonical, tuple(written), style, limitable=not write and _limitable(tree), returning=returning)


def _tokenize(glot: Any, sql: str) -> list[Any]:
    try:
        return glot.tokenize(sql)
    except SqlglotError as exc:
        raise QueryError(f"cannot parse the query as {glot.__class__.__name__.lower()} SQL: {first_line(exc)}") from None


def _parse_one(glot: Any, sql: str, grammar: str, write: bool = False) -> exp.Expression:
    if not sql.strip():
        raise InputError(
            "statement is empty: give one INSERT, UPDATE or DELETE" if write else "query is empty: give one SELECT statement"
        )
    try:
        statements = [s for s in glot.parser().parse(glot.tokenize(sql), sql) if s is not None]
    except SqlglotError as exc:
        raise QueryError(f"cannot parse the query as {grammar} SQL: {first_line(exc)}") from None
    except RecursionError:
        raise InputError("the query is nested too deeply to parse: flatten the expression") from None
    if not statements:
        raise InputError("query is empty: give one SELECT statement")
    if len(statements) > 1:
        if write:
            raise NotDmlError(
                f"the statement holds {len(statements)} statements; give one per entry of statements, "
                "which run in one transaction"
            )
        raise NotReadOnlyError(f"the query holds {len(statements)} statements; send exactly one read-only statement per task")
    return statements[0]


def _split_explain(sql: str) -> tuple[str, str]:
    """("EXPLAIN <options> ", the statement explained), or ("", sql)."""
    if _EXPLAIN_WORD.match(sql) is None:
        return "", sql
    match = _EXPLAIN.match(sql)
    if match is None:
        raise NotReadOnlyError("EXPLAIN with these options is not accepted; use EXPLAIN SELECT ...")
    options = " ".join(match.group(1).split())
    return (f"EXPLAIN {options} " if options else "EXPLAIN "), sql[match.end() :]


def check(dialect: Dialect, tree: Any, allowed: frozenset[str]) -> None:
    """Raise NotReadOnlyError unless `tree` is one read-only query calling only allowed functions.

    sqlglot trees are checked here; a dialect with a parser of its own checks its trees in
    `Dialect.check_tree`.
    """
    if not isinstance(tree, exp.Expression):
        dialect.check_tree(tree, allowed)
        return
    root = tree.this if isinstance(tree, exp.Describe) else tree
    if not isinstance(root, _READ_ROOTS):
        raise NotReadOnlyError(
            f"only read-only queries are accepted (SELECT, WITH ... SELECT, VALUES, EXPLAIN), got {_kind(tree)}"
        )
    for node in tree.walk():
        if isinstance(node, exp.Func):
            _check_function(node, allowed, dialect)
        elif node is tree and isinstance(node, exp.Describe):
            continue
        elif not isinstance(node, _READ_NODES):
            raise NotReadOnlyError(f"the query contains {_kind(node)}, which is not accepted in a read-only query")
        elif isinstance(node, exp.Dot) and isinstance(node.expression, exp.Func):
            raise NotReadOnlyError(
                f"the schema-qualified call {node.sql(dialect=dialect.grammar)[:80]} is not accepted: "
                "call built-in functions by their plain name"
            )
        elif isinstance(node, exp.Var) and node.arg_key == "operation_modifiers" and node.name.upper() not in _READ_MODIFIERS:
            raise NotReadOnlyError(
                f"the SELECT modifier {node.name} is not accepted: it leaves state for the next statement or "
                "changes how the server runs others"
            )
        elif isinstance(node, exp.Parameter) and not isinstance(node.parent, exp.Placeholder):
            raise NotReadOnlyError(
                f"the query uses the variable {node.sql(dialect=dialect.grammar)[:80]}: session variables carry "
                "state from one task to the next, so they are not accepted; use parameters"
            )


def check_write(dialect: Dialect, tree: Any, allowed: frozenset[str]) -> None:
    """Raise NotDmlError unless `tree` is one INSERT, UPDATE, DELETE or MERGE of allowed parts.

    The same node-class and function allowlists as `check`, plus the clauses of those statements
    (and the dialect's `write_functions`): whatever else a statement holds is refused.
    """
    if not isinstance(tree, exp.Expression):
        dialect.check_write_tree(tree, allowed)
        return
    if not isinstance(tree, _WRITE_ROOTS):
        raise NotDmlError(
            f"execute_sql runs one INSERT, UPDATE, DELETE or MERGE (upserts included), got {_kind(tree)}; "
            "DDL is not run by tasks (sqladapter seed creates the demo tables), and queries go to query_sql"
        )
    allowed = allowed | dialect.write_functions
    for node in tree.walk():
        if isinstance(node, exp.Func):
            _check_function(node, allowed, dialect, NotDmlError)
        elif not isinstance(node, _WRITE_NODES):
            raise NotDmlError(f"the statement contains {_kind(node)}, which is not accepted in execute_sql")
        elif isinstance(node, _WRITE_ROOTS) and node is not tree and not isinstance(node.parent, exp.When):
            raise NotDmlError(
                f"the statement contains a nested {type(node).__name__.upper()}: give each write as its own statement"
            )
        elif isinstance(node, exp.Dot) and isinstance(node.expression, exp.Func):
            raise NotDmlError(
                f"the schema-qualified call {node.sql(dialect=dialect.grammar)[:80]} is not accepted: "
                "call built-in functions by their plain name"
            )
        elif isinstance(node, exp.Var) and node.arg_key == "operation_modifiers":
            raise NotDmlError(f"the modifier {node.name} is not accepted in execute_sql")
        elif isinstance(node, exp.Parameter) and not isinstance(node.parent, exp.Placeholder):
            raise NotDmlError(
                f"the statement uses the variable {node.sql(dialect=dialect.grammar)[:80]}: session variables carry "
                "state from one task to the next, so they are not accepted; use parameters"
            )
        elif isinstance(node, exp.Select) and node.args.get("locks"):
            raise NotDmlError("a locking clause (FOR UPDATE/SHARE) is not accepted in execute_sql")


def _check_function(node: exp.Func, allowed: frozenset[str], dialect: Dialect, error: type[Exception] = NotReadOnlyError) -> None:
    name = function_name(node, dialect.grammar)
    where = "in execute_sql" if error is NotDmlError else "in a read-only query"
    if name is None:
        if isinstance(node, _SYNTAX_FUNCTIONS):
            return
        raise error(f"the query contains {_kind(node)}, which is not accepted {where}")
    if name not in allowed:
        raise error(
            f"function {name}() is not allowed in a query on {dialect.name}: only the database's built-in "
            "functions without side effects are, see the dialect's allowlist"
        )


def function_name(node: exp.Func, grammar: str | None) -> str | None:
    """The name the database is asked to call for `node`, lower-case, or None for syntax."""
    if isinstance(node, exp.Anonymous):
        return str(node.this).lower()
    if isinstance(node, _SYNTAX_FUNCTIONS):
        return None
    text = node.sql(dialect=grammar, comments=False)
    match = _CALL.match(text)
    if match is None or not text.rstrip().endswith(")"):
        return None
    return match.group(1).lower()


def _limitable(tree: exp.Expression) -> bool:
    if not isinstance(tree, (exp.Select, exp.SetOperation)):
        return False
    return not any(tree.args.get(key) for key in ("limit", "offset", "fetch", "locks", "into"))


def _kind(node: Any) -> str:
    if isinstance(node, exp.Command):
        return f"a {str(node.this).upper()} command"
    name = type(node).__name__.upper()
    return f"a {name} statement" if node.parent is None else name


# -- placeholders ---------------------------------------------------------------------------------

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def placeholder_spans(tokens: list[Any], marker: str = ":") -> list[tuple[int, int, str]]:
    """(start, end, name) of each placeholder: `?` (name ""), `:name`, or `$name` with marker "$"."""
    spans = []
    for i, token in enumerate(tokens):
        if token.token_type == TokenType.PLACEHOLDER and token.text == "?":
            spans.append((token.start, token.end + 1, ""))
        elif token.text == marker and token.token_type in (TokenType.COLON, TokenType.PARAMETER) and i + 1 < len(tokens):
            following = tokens[i + 1]
            if following.start == token.end + 1 and _NAME.match(following.text):
                spans.append((token.start, following.end + 1, following.text))
    return spans


def _replace_spans(sql: str, spans: list[tuple[int, int, str]], texts: list[str]) -> str:
    parts, position = [], 0
    for (start, end, _), text in zip(spans, texts):
        parts.append(sql[position:start])
        parts.append(text)
        position = end
    parts.append(sql[position:])
    return "".join(parts)
