"""Smoke data is in the format each task reads, and its gold answers score as correct."""

import json
import shutil

import pytest

from codetune.evaluate.tasks import accuracy, sparql, sql
from codetune.study import smoke_data


def test_sparql_pairs_gold_queries_answer_on_the_graph(tmp_path):
    made = smoke_data.sparql_pairs(tmp_path, 60)
    examples = sparql.load_sparql_dataset(made.eval_datasets["sparql"])
    graph = sparql.load_graph(made.extra["graph"])
    rows = sparql.score_example(examples[0], [examples[0].gold, "select ?x where { ?x ?y ?z }"], graph)
    assert [r["status"] for r in rows] == ["passed", "failed"]


def test_sql_pairs_gold_queries_execute_on_rows(tmp_path):
    made = smoke_data.sql_pairs(tmp_path, 40)
    examples = sql.load_sql_dataset(made.eval_datasets["sql"])
    rows = sql.score_example(examples[0], [examples[0].gold.removeprefix("SELECT"), " 1 FROM employees WHERE 0"],
                             timeout_s=5)
    assert rows[0]["database"] == "file" and rows[0]["status"] == "passed"
    assert rows[1]["status"] == "failed"


def test_special_token_pairs_load_as_accuracy_data(tmp_path):
    made = smoke_data.special_token_pairs(tmp_path, 50)
    examples = accuracy.load_accuracy_dataset(made.eval_datasets["accuracy"])
    assert examples and all(e.gold.endswith("<|end|>") and e.prompt.startswith("<|code|>") for e in examples)
    assert {json.loads(line)["label"] for line in made.train.read_text().splitlines()} == {"python", "java"}


def test_code_rows_are_real_local_code(tmp_path):
    made = smoke_data.code_files(tmp_path, 30, ["python"])
    rows = [json.loads(line) for line in made.train.read_text().splitlines()]
    assert rows and all(r["path"].endswith(".py") and r["lang"] == "python" for r in rows)


@pytest.mark.skipif(shutil.which("javac") is None, reason="no javac")
def test_smoke_java_problems_pass_with_right_answers_and_fail_with_wrong_ones(tmp_path):
    from codetune.evaluate.score import score_file

    path = smoke_data.multipl_e_java(tmp_path)
    right = {"add": "return a + b;", "larger": "return Math.max(a, b);", "absolute": "return Math.abs(x);",
             "isEven": "return n % 2 == 0;", "square": "return n * n;",
             "reverse": "return new StringBuilder(s).reverse().toString();", "sumTo": "return n * (n + 1) / 2;",
             "count": "int k = 0; for (char x : s.toCharArray()) if (x == c) k++; return k;"}
    samples = tmp_path / "samples.jsonl"
    with samples.open("w") as fh:
        for row in map(json.loads, path.read_text().splitlines()):
            fn = row["name"].split("_", 2)[2]
            fh.write(json.dumps({"task_id": row["task_id"], "completion": f"        {right[fn]}\n"}) + "\n")
            fh.write(json.dumps({"task_id": row["task_id"], "completion": "        throw new RuntimeException();\n"})
                     + "\n")
    results = score_file("multipl-e:java", samples, dataset=str(path), output_dir=tmp_path / "out", ks=[1])
    assert results["status_counts"]["passed"] == len(right)
    assert results["status_counts"]["runtime_error"] == len(right)
