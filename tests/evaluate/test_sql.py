"""Text-to-SQL scoring on a crafted SQLite database: order rules, exact match, time limits, read-only."""

import hashlib
import json
import sqlite3

import pytest

from codetune.evaluate.tasks.sql import (
    SqlExample,
    build_prompt,
    exact_match,
    gold_orders,
    load_sql_dataset,
    open_readonly,
    results_match,
    run_query,
    score_example,
    summarize_sql,
)

SCHEMA = "CREATE TABLE singer (id INTEGER PRIMARY KEY, name TEXT, country TEXT, age INTEGER)"
ROWS = [(1, "Ana", "PT", 30), (2, "Bo", "SE", 25), (3, "Cy", "PT", 41), (4, "Di", "FR", 25), (5, "Ana", "ES", 52)]


@pytest.fixture()
def db(tmp_path):
    path = tmp_path / "database" / "concert" / "concert.sqlite"  # Spider's layout
    path.parent.mkdir(parents=True)
    conn = sqlite3.connect(path)
    conn.execute(SCHEMA)
    conn.executemany("INSERT INTO singer VALUES (?, ?, ?, ?)", ROWS)
    conn.commit()
    conn.close()
    return path


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _one(db, gold, completion, timeout_s=5.0):
    return score_example(SqlExample("t/0", "q", gold, db_path=str(db)), [completion], timeout_s)[0]


def test_results_match_rules():
    assert results_match([(1,), (2,), (2,)], [(2,), (1,), (2,)], ordered=False)
    assert not results_match([(1,), (2,), (2,)], [(2,), (1,), (1,)], ordered=False)  # multisets, not sets
    assert not results_match([(1,), (2,)], [(2,), (1,)], ordered=True)
    assert results_match([(0.1 + 0.2,)], [(0.3,)], ordered=True)


def test_gold_orders_only_at_top_level():
    assert gold_orders("SELECT name FROM singer ORDER BY age DESC")
    assert not gold_orders("SELECT name FROM (SELECT name, age FROM singer ORDER BY age) AS t")
    assert not gold_orders("SELECT name FROM singer")


def test_same_rows_in_another_order_pass_unless_gold_orders(db):
    unordered = _one(db, "SELECT name FROM singer WHERE country = 'PT'", " name FROM singer WHERE age > 29 AND "
                     "country = 'PT' ORDER BY age DESC")
    assert unordered["status"] == "passed" and unordered["execution_match"] and not unordered["exact_match"]
    ordered = _one(db, "SELECT name FROM singer WHERE country = 'PT' ORDER BY age ASC",
                   " name FROM singer WHERE country = 'PT' ORDER BY age DESC")
    assert ordered["status"] == "failed" and ordered["execution_match"] is False
    same_order = _one(db, "SELECT name FROM singer WHERE country = 'PT' ORDER BY age ASC",
                      " name FROM singer WHERE country = 'PT' ORDER BY id")
    assert same_order["status"] == "passed"


def test_exact_match_is_normalized():
    assert exact_match("select  name from Singer where AGE>25;", "SELECT name FROM singer WHERE age > 25")
    assert not exact_match("SELECT name FROM singer WHERE age > 26", "SELECT name FROM singer WHERE age > 25")


def test_duplicates_count(db):
    row = _one(db, "SELECT name FROM singer", " DISTINCT name FROM singer")
    assert row["status"] == "failed"  # {Ana, Ana, ...} != {Ana, ...}


def test_statuses_for_bad_queries(db):
    assert _one(db, "SELECT name FROM singer", " nme FROM singer")["status"] == "compile_error"
    assert _one(db, "SELECT name FROM singer", " name FROM singer WHERE")["status"] == "compile_error"
    assert _one(db, "SELECT name FROM singer", " abs(-9223372036854775808) FROM singer")["status"] == "runtime_error"
    gold_broken = _one(db, "SELECT nothing FROM singer", " name FROM singer")
    assert gold_broken["status"] == "harness_error" and "gold query fails" in gold_broken["stderr"]


def test_runaway_query_times_out(db):
    crossed = ", ".join(f"singer s{i}" for i in range(14))  # 5^14 rows
    row = _one(db, "SELECT count(*) FROM singer", f" count(*) FROM {crossed}", timeout_s=0.3)
    assert row["status"] == "timeout" and row["elapsed_s"] < 5
    conn = open_readonly(str(db))
    endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    assert run_query(conn, endless, timeout_s=0.2).status == "timeout"
    assert run_query(conn, "SELECT count(*) FROM singer").rows == [(5,)]  # the connection still works


def test_generated_writes_cannot_touch_the_database(db, tmp_path):
    before = _digest(db)
    assert _one(db, "SELECT name FROM singer", " 1; DROP TABLE singer")["status"] == "compile_error"
    conn = open_readonly(str(db))
    for statement in ("DROP TABLE singer", "DELETE FROM singer", "INSERT INTO singer VALUES (9, 'x', 'y', 1)",
                      f"ATTACH DATABASE '{tmp_path / 'evil.db'}' AS evil", "PRAGMA query_only = OFF",
                      "CREATE TABLE t (x)"):
        assert run_query(conn, statement).status == "sandbox_violation", statement
    # Below the authorizer, the file itself is opened read-only.
    conn.set_authorizer(None)
    conn.execute("PRAGMA query_only = OFF")
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        conn.execute("DROP TABLE singer")
    conn.close()
    assert _digest(db) == before
    assert not (tmp_path / "evil.db").exists()
    assert sqlite3.connect(db).execute("SELECT count(*) FROM singer").fetchone() == (5,)


def test_schema_only_context_is_judged_by_exact_match_and_says_so():
    example = SqlExample("c/0", "Names of singers older than 30?", "SELECT name FROM singer WHERE age > 30",
                         context=SCHEMA + ";")
    rows = score_example(example, [" name FROM singer WHERE age > 30", " name FROM singer WHERE age > 31",
                                   " name FROM singers"])
    assert [r["status"] for r in rows] == ["passed", "failed", "compile_error"]
    assert [r["executable"] for r in rows] == [True, True, False]
    assert all(r["execution_match"] is None and r["database"] == "schema_only" for r in rows)
    summary = summarize_sql(rows)
    assert summary["execution_accuracy"] is None and summary["exact_match"] == pytest.approx(1 / 3)
    assert summary["executable"] == pytest.approx(2 / 3) and "no rows" in summary["note"]


def test_context_with_rows_is_executed():
    context = SCHEMA + "; INSERT INTO singer VALUES (1, 'Ana', 'PT', 30), (2, 'Bo', 'SE', 25);"
    example = SqlExample("c/1", "q", "SELECT name FROM singer WHERE age < 28", context=context)
    rows = score_example(example, [" name FROM singer WHERE country = 'SE'"])
    rows += score_example(example, [" name FROM singer WHERE nope = 1"])  # does not run: counts as wrong
    assert rows[0]["status"] == "passed" and rows[0]["database"] == "context_rows"
    summary = summarize_sql(rows)
    assert summary["execution_accuracy"] == 0.5 and summary["samples_on_rows"] == 2


def test_context_sqlite_cannot_load_falls_back_to_exact_match():
    example = SqlExample("c/2", "q", "SELECT a FROM t", context="CREATE TABLE t (a INT AUTO_INCREMENT) ENGINE=x;")
    row = score_example(example, [" a FROM t"])[0]
    assert row["database"] == "none" and row["status"] == "passed" and row["executable"] is None


def test_load_dataset_with_spider_layout_and_prompt(db, tmp_path):
    data = tmp_path / "dev.jsonl"
    data.write_text(json.dumps({"db_id": "concert", "question": "How many singers?",
                                "query": "SELECT count(*) FROM singer"}) + "\n"
                    + json.dumps({"question": "x?", "answer": "SELECT 1", "context": "CREATE TABLE t (a)"}) + "\n")
    examples = load_sql_dataset(data)
    assert examples[0].db_path == str(db) and examples[1].context == "CREATE TABLE t (a)"
    prompt = build_prompt(examples[0])
    assert "CREATE TABLE singer" in prompt and "How many singers?" in prompt and prompt.endswith("SELECT")
    assert len(load_sql_dataset(data, limit=1)) == 1
