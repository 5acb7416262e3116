"""Training pairs are put to the model exactly as the evaluation tasks prompt it."""

import json

import pytest

from codetune.config import SourceConfig
from codetune.evaluate.tasks import sparql, sql
from codetune.prompts import training_pair


def test_sql_pairs_train_on_the_sql_task_prompt_and_complete_after_select():
    row = {"question": "how many rows?", "context": "CREATE TABLE t (a INT)", "answer": "SELECT COUNT(*) FROM t"}
    prompt, completion = training_pair("sql", row, "question", "answer")
    assert prompt == sql.build_prompt(sql.SqlExample("x", row["question"], row["answer"], row["context"]))
    assert completion == " COUNT(*) FROM t"
    assert sql.completion_to_query(completion) == "SELECT COUNT(*) FROM t"


def test_sparql_and_format_string_templates():
    row = {"question": "where is x?", "query": "select ?x where { dbr:X dbo:location ?x }"}
    prompt, completion = training_pair("sparql", row, "question", "query")
    assert prompt == sparql.build_prompt(sparql.SparqlExample("x", row["question"], row["query"]))
    assert completion == row["query"]
    assert training_pair("Q: {question}\nA:", row, "question", "query") == ("Q: where is x?\nA:", row["query"])
    assert training_pair(None, row, "question", "query") == (row["question"], row["query"])
    with pytest.raises(KeyError):
        training_pair("{missing}", row, "question", "query")


def test_sources_apply_the_template_and_count_rows_it_cannot_fill(tmp_path):
    from codetune.data.sources import Warnings, iter_source

    path = tmp_path / "pairs.jsonl"
    rows = [{"question": "q1", "context": "CREATE TABLE t (a INT)", "answer": "SELECT a FROM t"},
            {"question": "q2", "context": "CREATE TABLE t (a INT)", "answer": "DELETE FROM t"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    src = SourceConfig(path=str(path), prompt_field="question", completion_field="answer", prompt_template="sql")
    warnings = Warnings()
    items = list(iter_source(0, src, 1_000_000, warnings))
    assert items[0].prompt.endswith("-- Question: q1\nSELECT") and items[0].completion == " a FROM t"
    assert items[1].reason == "missing_field" and "prompt_template" in warnings.messages[0]


def test_template_without_pairs_is_a_config_error():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="prompt_template"):
        SourceConfig(path="x.jsonl", prompt_template="sql")
