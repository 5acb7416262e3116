"""Comparison report: the pure pieces by hand, and the HTML + PNGs from crafted results."""

import json

import pytest

from codetune.report.compare import (
    deltas_vs_base,
    headline,
    language_scores,
    load_results,
    pearson,
    perplexity_vs_pass,
    task_language,
    write_comparison,
)


def _result(bpb_py, bpb_js, pass_py, pass_js, statuses_py):
    return {"tasks": {
        "perplexity": {"metrics": {"bits_per_byte": (bpb_py + bpb_js) / 2, "perplexity": 3.0, "by_language": {
            "python": {"bits_per_byte": bpb_py}, "javascript": {"bits_per_byte": bpb_js}}}},
        "humaneval": {"metrics": {"pass@1": {"value": pass_py}, "statuses": statuses_py},
                      "protocol": {"language": "python"}},
        "multipl-e:js": {"metrics": {"pass@1": {"value": pass_js}, "pass@10": {"value": pass_js * 2},
                                     "statuses": {"passed": 1, "compile_error": 3}}},
        "sql": {"metrics": {"execution_accuracy": None, "exact_match": 0.25, "statuses": {"failed": 4}}},
    }}


RESULTS = [
    ("base", _result(1.2, 1.5, 0.10, 0.20, {"passed": 1, "failed": 9})),
    ("step-1", _result(1.0, 1.6, 0.20, 0.15, {"passed": 2, "failed": 6, "timeout": 2})),
    ("step-2", _result(0.9, 1.7, 0.30, 0.10, {"passed": 3, "runtime_error": 7})),
]


def test_pearson_hand_numbers():
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # x = 1,2,3,4 ; y = 1,3,2,4: cov = 4, var x = 5, var y = 5 -> r = 0.8
    assert pearson([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert pearson([1, 2], [1, 2]) is None
    assert pearson([1, 1, 1], [1, 2, 3]) is None


def test_task_language_and_headline():
    assert task_language("humaneval", {}) == "python"
    assert task_language("multipl-e:javascript", {}) == "js"
    assert task_language("humaneval-x:cpp", {"protocol": {"language": "cpp"}}) == "cpp"
    rows = dict(headline("sql", RESULTS[0][1]["tasks"]["sql"]))
    assert rows["sql execution accuracy"] is None and rows["sql exact match"] == 0.25
    rows = dict(headline("multipl-e:js", RESULTS[0][1]["tasks"]["multipl-e:js"]))
    assert rows == {"multipl-e:js pass@1": 0.2, "multipl-e:js pass@10": 0.4}


def test_language_scores_deltas_and_correlation():
    scores = language_scores(RESULTS)
    assert scores.bits_per_byte["base"] == {"python": 1.2, "js": 1.5}  # javascript folded into js
    assert scores.pass1["step-2"] == {"python": 0.30, "js": 0.10}
    assert scores.statuses["step-1"]["python"] == {"passed": 2, "failed": 6, "timeout": 2}
    assert scores.statuses["base"]["sql"] == {"failed": 4}
    deltas = deltas_vs_base(scores.pass1, "base")
    assert deltas["step-2"]["python"] == pytest.approx(0.20) and deltas["step-2"]["js"] == pytest.approx(-0.10)
    corr = perplexity_vs_pass(scores, ["base", "step-1", "step-2"])
    assert corr["python"]["r"] < -0.9  # lower bits/byte, higher pass@1
    assert corr["js"]["r"] < -0.9 and len(corr["js"]["points"]) == 3


def test_write_comparison_html_and_pngs(tmp_path):
    for name, result in RESULTS:
        (tmp_path / "eval" / name).mkdir(parents=True)
        (tmp_path / "eval" / name / "results.json").write_text(json.dumps(result))
    loaded = load_results([tmp_path / "eval" / n for n, _ in RESULTS])
    assert [n for n, _ in loaded] == ["base", "step-1", "step-2"]
    page = write_comparison(loaded, tmp_path / "eval").read_text()
    for png in ("compare_deltas.png", "compare_failures.png", "compare_perplexity_vs_pass.png"):
        assert (tmp_path / "eval" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png in page
    assert "humaneval pass@1" in page and "perplexity bits/byte [js]" in page
    assert "+0.200" in page and "-0.100" in page  # step-2's python gain and js loss (forgetting)


def test_single_model_report_has_no_deltas(tmp_path):
    page = write_comparison(RESULTS[:1], tmp_path).read_text()
    assert "No language is measured on both" in page
    assert not (tmp_path / "compare_deltas.png").exists()


def test_results_scored_from_samples_files_are_compared(tmp_path):
    """`codetune eval --task T --samples FILE` writes one task at the top level, with status_counts."""
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "results.json").write_text(json.dumps(
        {"task": "humaneval", "metrics": {"pass@1": {"value": 0.5}}, "status_counts": {"passed": 1, "failed": 1},
         "protocol": {"language": "python"}}))
    loaded = load_results([tmp_path / "other"])
    scores = language_scores([RESULTS[0], *loaded])
    assert scores.pass1["other"] == {"python": 0.5}
    assert scores.statuses["other"]["python"] == {"passed": 1, "failed": 1}
