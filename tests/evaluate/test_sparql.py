"""NL -> SPARQL scoring on a crafted rdflib graph: normalization, EM, BLEU, answer-set F1, limits."""

import json

import pytest

from codetune.evaluate.tasks.sparql import (
    SparqlExample,
    answer_f1,
    corpus_bleu,
    decode_nspm,
    exact_match,
    load_graph,
    load_sparql_dataset,
    normalize_sparql,
    run_query,
    score_example,
    summarize_sparql,
)

GRAPH = """
@prefix dbr: <http://dbpedia.org/resource/> .
@prefix dbo: <http://dbpedia.org/ontology/> .
dbr:Rome dbo:country dbr:Italy .
dbr:Milan dbo:country dbr:Italy .
dbr:Lyon dbo:country dbr:France .
dbr:Italy dbo:capital dbr:Rome .
dbr:Rome dbo:populationTotal 2873000 .
"""
GOLD = "SELECT ?city WHERE { ?city dbo:country dbr:Italy }"


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    path = tmp_path_factory.mktemp("kg") / "kg.ttl"
    path.write_text(GRAPH)
    return load_graph(path)


def test_normalization_expands_prefixes_and_ignores_layout():
    full = ("PREFIX dbo: <http://dbpedia.org/ontology/>\nselect ?city where {\n  ?city dbo:country "
            "<http://dbpedia.org/resource/Italy> . }")
    assert normalize_sparql(full) == normalize_sparql(GOLD)
    assert exact_match(full, GOLD)
    assert not exact_match("SELECT ?x WHERE { ?x dbo:country dbr:Italy }", GOLD)  # variable names count
    assert normalize_sparql("ASK { ?s a dbo:City }") == (
        "ASK { ?s <http://www.w3.org/1999/02/22-rdf-syntax-ns#type> <http://dbpedia.org/ontology/City> }")
    assert normalize_sparql("SELECT ?n WHERE { ?c dbo:pop ?n FILTER(?n >= 10) }").endswith("FILTER ( ?n >= 10 ) }")


def test_decode_nspm():
    encoded = "select var_x where brack_open dbr_Rome dbo_country var_x sep_dot brack_close"
    assert decode_nspm(encoded) == "select ?x where { dbr:Rome dbo:country ?x . }"
    assert exact_match(decode_nspm(encoded), "SELECT ?x WHERE { dbr:Rome dbo:country ?x }")


def test_answer_f1_hand_numbers():
    assert answer_f1({1, 2}, {2, 3, 4}) == pytest.approx((0.5, 1 / 3, 0.4))
    assert answer_f1(set(), set()) == (1.0, 1.0, 1.0)
    assert answer_f1(set(), {1}) == (0.0, 0.0, 0.0)
    assert answer_f1({1}, {1}) == (1.0, 1.0, 1.0)


def test_bleu_is_100_for_identical_and_lower_otherwise():
    assert corpus_bleu([GOLD], [GOLD]) == pytest.approx(100.0)
    partial = corpus_bleu(["SELECT ?city WHERE { ?city dbo:country dbr:France }"], [GOLD])
    assert 0 < partial < 100
    assert corpus_bleu([], []) == 0.0


def test_answer_sets_on_the_graph(graph):
    example = SparqlExample("s/0", "Which cities are in Italy?", GOLD)
    rows = score_example(example, [
        "SELECT ?x WHERE { ?x dbo:country dbr:Italy . }",  # same answers, other variable
        "SELECT ?x WHERE { ?x dbo:country ?c }",  # superset
        "SELECT ?x WHERE { ?x dbo:country dbr:Italy",  # malformed
        "SELECT ?x WHERE { ?x nope:country dbr:Italy }",  # unknown prefix
    ], graph=graph)
    assert [r["status"] for r in rows] == ["passed", "failed", "compile_error", "compile_error"]
    assert rows[0]["answer_f1"] == 1.0 and not rows[0]["exact_match"]
    assert rows[1]["answer_precision"] == pytest.approx(2 / 3) and rows[1]["answer_recall"] == 1.0
    assert rows[1]["answer_f1"] == pytest.approx(0.8)
    assert rows[2]["answer_f1"] == 0.0
    summary = summarize_sparql(rows, {"s/0": GOLD})
    assert summary["answer_f1"] == pytest.approx((1 + 0.8) / 4)
    assert summary["exact_match"] == 0.0 and 0 < summary["bleu"] < 100


def test_ask_queries_compare_booleans(graph):
    example = SparqlExample("s/1", "Is Rome the capital of Italy?", "ASK { dbr:Italy dbo:capital dbr:Rome }")
    rows = score_example(example, ["ASK { dbr:Italy dbo:capital dbr:Milan }", "ASK { dbr:Italy dbo:capital dbr:Rome }"],
                         graph=graph)
    assert [r["status"] for r in rows] == ["failed", "passed"]


def test_without_a_graph_exact_match_decides_and_syntax_is_checked():
    keywords_lower = "select ?city where { ?city dbo:country dbr:Italy }"
    rows = score_example(SparqlExample("s/2", "q", GOLD), [keywords_lower, "SELECT ?x WHERE {", GOLD + " LIMIT 1"])
    assert [r["status"] for r in rows] == ["passed", "compile_error", "failed"]
    assert all(r["answer_f1"] is None for r in rows)
    assert summarize_sparql(rows, {"s/2": GOLD})["answer_f1"] is None


def test_runaway_remote_and_update_queries_are_contained(graph):
    slow = ("SELECT (COUNT(*) AS ?n) WHERE { ?a ?p ?b . ?c ?q ?d . ?e ?r ?f . ?g ?s ?h . ?i ?t ?j . ?k ?u ?l . "
            "?m ?v ?o . ?w ?x ?y }")
    assert run_query(graph, slow, timeout_s=0.5).status == "timeout"
    assert run_query(graph, "SELECT * WHERE { SERVICE <http://dbpedia.org/sparql> { ?s ?p ?o } }").status == (
        "sandbox_violation")
    assert run_query(graph, "DELETE WHERE { ?s ?p ?o }").status == "compile_error"
    assert run_query(graph, "SELECT ?s FROM <http://127.0.0.1:9/x.ttl> WHERE { ?s ?p ?o }").status in (
        "passed", "runtime_error")
    assert len(graph) == 5  # the parent's graph is untouched
    assert run_query(graph, GOLD).answers == {("<http://dbpedia.org/resource/Rome>",),
                                              ("<http://dbpedia.org/resource/Milan>",)}


def test_load_jsonl_and_nspm_files(tmp_path):
    (tmp_path / "d.jsonl").write_text(json.dumps({"question": "Cities in Italy?", "sparql": GOLD}) + "\n")
    assert load_sparql_dataset(tmp_path / "d.jsonl")[0].gold == GOLD
    (tmp_path / "data.en").write_text("where is rome\nwhat is milan\n")
    (tmp_path / "data.sparql").write_text("select var_x where brack_open dbr_Rome dbo_country var_x brack_close\n"
                                          "select var_x where brack_open dbr_Milan dbo_country var_x brack_close\n")
    examples = load_sparql_dataset(tmp_path, limit=1)
    assert len(examples) == 1 and examples[0].gold == "select ?x where { dbr:Rome dbo:country ?x }"
    assert load_sparql_dataset(tmp_path / "data")[1].question == "what is milan"
