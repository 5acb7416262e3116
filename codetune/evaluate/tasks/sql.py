"""Text-to-SQL: a question and a schema in, a SQLite query out, scored by execution and by exact match.

Dataset rows (JSONL) carry a question (`question`/`instruction`/`sql_prompt`), a gold query
(`query`/`sql`/`answer`/`gold`), and where the query runs: a database file (`db_path`, relative to the
dataset file, or Spider's `db_id` under `<dataset dir>/database/<db_id>/<db_id>.sqlite`) and/or a schema
context (`context`/`sql_context`/`schema`: CREATE TABLE and possibly INSERT statements).

Execution accuracy: gold and predicted queries run on the same data; results are equal as multisets of
rows, and as lists only when the gold query orders its result (a top-level ORDER BY). It is only measured
where the data has rows: on empty tables almost every query returns nothing and would "match". When a
dataset brings only CREATE TABLE context (sql-create-context and similar), the examples run against an
empty in-memory database built from the context, which tells whether the query is valid against the
schema (`executable`), and the headline is normalized exact match (sqlglot); the results say so.

Generated queries are untrusted: database files are opened read-only (`mode=ro` URI), an authorizer lets
a statement only read (no ATTACH, PRAGMA, writes or DDL), one statement at a time, and a progress
handler interrupts a query past its time limit. Everything runs in-process: SQLite cannot reach the
network or the file system beyond what the authorizer allows, so no subprocess sandbox is needed.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from codetune.errors import DataError
from codetune.evaluate.tasks import first_field, iter_jsonl
from codetune.prompts import SQL_PROMPT_TAIL, sql_prompt

QUESTION_FIELDS = ("question", "instruction", "sql_prompt")
GOLD_FIELDS = ("query", "sql", "answer", "gold")
CONTEXT_FIELDS = ("context", "sql_context", "schema")
STOP_SEQUENCES = (";", "\n\n", "\n--", "```")
PROMPT_TAIL = SQL_PROMPT_TAIL
MAX_ROWS = 100_000
# Aggregates computed in a different order differ in the last bits; round floats before comparing.
FLOAT_DIGITS = 6

_READ_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
_COMPILE_ERRORS = ("syntax error", "incomplete input", "unrecognized token", "no such table",
                   "no such column", "no such function", "ambiguous column", "wrong number of arguments",
                   "misuse of aggregate", "one statement at a time", "sub-select returns")


@dataclass(frozen=True)
class SqlExample:
    task_id: str
    question: str
    gold: str
    context: str | None = None
    db_path: str | None = None


def load_sql_dataset(path: str | Path, limit: int | None = None) -> list[SqlExample]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"sql dataset not found: {path} (a JSONL of question, gold query, context or db)")
    examples = []
    for line_no, row in iter_jsonl(path):
        question, gold = first_field(row, QUESTION_FIELDS), first_field(row, GOLD_FIELDS)
        if question is None or gold is None:
            raise DataError(f"{path}:{line_no}: needs a question ({'/'.join(QUESTION_FIELDS)}) "
                            f"and a gold query ({'/'.join(GOLD_FIELDS)})")
        db_path = None
        if row.get("db_path"):
            db_path = str((path.parent / row["db_path"]).resolve())
        elif row.get("db_id"):
            db_path = str(path.parent / "database" / row["db_id"] / f"{row['db_id']}.sqlite")
        if db_path is not None and not Path(db_path).is_file():
            raise DataError(f"{path}:{line_no}: database not found: {db_path}")
        examples.append(SqlExample(str(row.get("task_id", row.get("id", f"sql/{len(examples)}"))), question,
                                   gold, first_field(row, CONTEXT_FIELDS), db_path))
        if limit is not None and len(examples) >= limit:
            break
    if not examples:
        raise DataError(f"sql dataset {path} holds no examples")
    return examples


def schema_of(db_path: str) -> str:
    with closing(open_readonly(db_path)) as conn:
        rows = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND sql IS NOT NULL").fetchall()
    return ";\n".join(r[0] for r in rows) + ";"


def build_prompt(example: SqlExample) -> str:
    schema = example.context or (schema_of(example.db_path) if example.db_path else "")
    return sql_prompt(example.question, schema)


def completion_to_query(completion: str) -> str:
    return (PROMPT_TAIL + completion).strip().rstrip(";").strip()


def normalize_sql(sql: str) -> str:
    """Canonical text of a query: sqlglot's rendering (keyword case, spacing, identifier case) or, where it
    cannot parse, the lower-cased text with whitespace collapsed."""
    import sqlglot

    sql = sql.strip().rstrip(";")
    try:
        return sqlglot.parse_one(sql, read="sqlite").sql(dialect="sqlite", normalize=True)
    except (sqlglot.errors.SqlglotError, ValueError):
        return " ".join(sql.lower().split())


def exact_match(predicted: str, gold: str) -> bool:
    return normalize_sql(predicted) == normalize_sql(gold)


def gold_orders(sql: str) -> bool:
    """True when the query's result order is defined: an ORDER BY on the outermost query."""
    import sqlglot

    try:
        tree = sqlglot.parse_one(sql, read="sqlite")
    except (sqlglot.errors.SqlglotError, ValueError):
        return re.search(r"\border\s+by\b", sql, re.IGNORECASE) is not None
    return tree.args.get("order") is not None


def _canonical(value):
    return round(value, FLOAT_DIGITS) if isinstance(value, float) else value


def results_match(gold_rows: Sequence[tuple], predicted_rows: Sequence[tuple], ordered: bool) -> bool:
    gold = [tuple(_canonical(v) for v in row) for row in gold_rows]
    pred = [tuple(_canonical(v) for v in row) for row in predicted_rows]
    return gold == pred if ordered else Counter(gold) == Counter(pred)


def _authorize_reads(action, *args):
    return sqlite3.SQLITE_OK if action in _READ_ACTIONS else sqlite3.SQLITE_DENY


def _guard(conn: sqlite3.Connection) -> sqlite3.Connection:
    conn.set_authorizer(_authorize_reads)
    return conn


def open_readonly(db_path: str) -> sqlite3.Connection:
    """A read-only connection to a database file that only lets statements read."""
    uri = Path(db_path).resolve().as_uri() + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
    conn.execute("PRAGMA query_only = ON")
    return _guard(conn)


def database_from_context(context: str) -> tuple[sqlite3.Connection | None, bool, str | None]:
    """An in-memory database from CREATE TABLE (+ INSERT) statements: (connection, has rows, error)."""
    conn = sqlite3.connect(":memory:", check_same_thread=False)
    try:
        conn.executescript(context)
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        has_rows = any(conn.execute(f'SELECT 1 FROM "{t}" LIMIT 1').fetchone() for t in tables)
    except sqlite3.Error as exc:
        conn.close()
        return None, False, f"schema context does not load in SQLite: {exc}"
    conn.execute("PRAGMA query_only = ON")
    return _guard(conn), has_rows, None


@dataclass
class QueryOutcome:
    rows: list[tuple] | None
    status: str  # passed (ran), compile_error, runtime_error, timeout, sandbox_violation
    error: str | None = None
    elapsed_s: float = 0.0


def run_query(conn: sqlite3.Connection, sql: str, timeout_s: float = 5.0, max_rows: int = MAX_ROWS) -> QueryOutcome:
    """Run one statement with a wall-time limit; never raises for anything the query does."""
    deadline = time.monotonic() + timeout_s
    conn.set_progress_handler(lambda: time.monotonic() > deadline, 1000)
    start = time.monotonic()
    try:
        cursor = conn.execute(sql)
        rows = cursor.fetchmany(max_rows + 1)
        if len(rows) > max_rows:
            return QueryOutcome(None, "runtime_error", f"more than {max_rows} rows", time.monotonic() - start)
        return QueryOutcome(rows, "passed", None, time.monotonic() - start)
    except sqlite3.Error as exc:
        message = str(exc)
        if "interrupted" in message:
            status = "timeout"
        elif "not authorized" in message or "readonly" in message or "read-only" in message:
            status = "sandbox_violation"
        elif any(pattern in message.lower() for pattern in _COMPILE_ERRORS):
            status = "compile_error"
        else:
            status = "runtime_error"
        return QueryOutcome(None, status, message, time.monotonic() - start)
    except (OverflowError, ValueError, MemoryError) as exc:
        return QueryOutcome(None, "runtime_error", f"{type(exc).__name__}: {exc}", time.monotonic() - start)
    finally:
        conn.set_progress_handler(None, 0)


@dataclass
class _Database:
    conn: sqlite3.Connection | None
    kind: str  # "file", "context_rows", "schema_only", "none" (nothing SQLite can load: exact match only)
    error: str | None = None  # why a database with rows cannot judge this example


def _database_for(example: SqlExample) -> _Database:
    if example.db_path:
        return _Database(open_readonly(example.db_path), "file")
    if example.context:
        conn, has_rows, error = database_from_context(example.context)
        if conn is not None:
            return _Database(conn, "context_rows" if has_rows else "schema_only")
    return _Database(None, "none")


def score_example(example: SqlExample, completions: Sequence[str], timeout_s: float = 5.0) -> list[dict]:
    """One sample row per completion. `status` is execution correctness where the data has rows, and
    exact match (after the query ran against the schema) where there are no rows to execute on."""
    db = _database_for(example)
    try:
        gold = run_query(db.conn, example.gold, timeout_s) if db.conn is not None else None
        if gold is not None and gold.status != "passed":
            if db.kind == "schema_only":  # e.g. a dialect SQLite lacks: judge by exact match alone
                db.conn.close()
                db = _Database(None, "none")
            else:
                db.error = f"gold query fails: {gold.error}"
        ordered = gold_orders(example.gold)
        rows = []
        for index, completion in enumerate(completions):
            query = completion_to_query(completion)
            em = exact_match(query, example.gold)
            row = {"task_id": example.task_id, "sample_index": index, "completion": completion, "program": query,
                   "exact_match": em, "execution_match": None, "executable": None, "database": db.kind,
                   "exit_code": None, "stderr": "", "elapsed_s": 0.0}
            if db.error is not None:
                row.update(status="harness_error", stderr=db.error[:2000])
            elif db.conn is None:
                row["status"] = "passed" if em else "failed"
            else:
                out = run_query(db.conn, query, timeout_s)
                row.update(executable=out.status == "passed", stderr=(out.error or "")[:2000],
                           elapsed_s=round(out.elapsed_s, 4))
                if out.status != "passed":
                    row["status"] = out.status
                elif db.kind in ("file", "context_rows"):
                    row["execution_match"] = results_match(gold.rows, out.rows, ordered)
                    row["status"] = "passed" if row["execution_match"] else "failed"
                else:
                    row["status"] = "passed" if em else "failed"
            rows.append(row)
        return rows
    finally:
        if db.conn is not None:
            db.conn.close()


def summarize_sql(samples: Sequence[dict]) -> dict:
    """Exact match and executability over every sample; execution accuracy over the samples whose database
    has rows (a prediction that does not run counts as wrong there)."""
    on_rows = [s for s in samples if s["database"] in ("file", "context_rows") and s["status"] != "harness_error"]
    ran = [s for s in samples if s["executable"] is not None]
    kinds = Counter(s["database"] for s in samples if s["sample_index"] == 0)
    out = {
        "exact_match": sum(s["exact_match"] for s in samples) / len(samples) if samples else None,
        "executable": sum(s["executable"] for s in ran) / len(ran) if ran else None,
        "execution_accuracy": sum(s["status"] == "passed" for s in on_rows) / len(on_rows) if on_rows else None,
        "samples_on_rows": len(on_rows),
        "examples_by_database": dict(kinds),
    }
    if kinds.get("schema_only") or kinds.get("none"):
        out["note"] = (f"{kinds.get('schema_only', 0) + kinds.get('none', 0)} examples have a schema but no rows: "
                       "execution accuracy there would be meaningless (empty results match), so they count "
                       "towards exact match, and towards `executable` (the query runs against the schema) where "
                       "SQLite can load the schema")
    return out
