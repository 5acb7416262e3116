"""HumanEval-X (Hub `THUDM/humaneval-x` or local `humaneval_<lang>.jsonl`): HumanEval in several languages,
with canonical solutions in each, which is how we check that the executor is right.

Program = [headers] + prompt + completion + "\\n" + test, as CodeGeeX's evaluator builds it; for C++ the
standard headers (and Boost.Any) the tests assume are put first when the prompt lacks them. Completions of
brace languages stop on the closing "\\n}" of the function (Java: of the class) and keep it.
"""

from __future__ import annotations

from codetune.errors import ConfigError
from codetune.evaluate.languages import Language
from codetune.evaluate.tasks import Problem, Task, load_rows, require_fields

HUB_NAME = "THUDM/humaneval-x"
# Rust's tests are #[test] functions (they need `rustc --test`) and Go's need `go test`: not wired up yet, and
# a plain build would run none of them and pass everything.
SUPPORTED = ("python", "java", "js", "cpp")
CPP_HEADERS = ("stdlib.h", "algorithm", "cmath", "math.h", "numeric", "stdio.h", "vector", "set", "map", "queue",
               "stack", "list", "deque", "boost/any.hpp", "string", "climits", "cstring", "iostream", "sstream",
               "fstream")


def _cpp_setup(prompt: str) -> str:
    lines = [f"#include<{h}>" for h in CPP_HEADERS if f"<{h}>" not in prompt.replace(" ", "")]
    return "\n".join(lines + ["using namespace std;"]) + "\n"


def load(language: Language, dataset: str | None = None) -> Task:
    if language.name not in SUPPORTED:
        raise ConfigError(f"humaneval-x:{language.name} is not supported; use one of {', '.join(SUPPORTED)}")
    rows, source, digest = load_rows(dataset, f"humaneval_{language.name}.jsonl", HUB_NAME, language.name)
    require_fields(rows, ("task_id", "prompt", "test"), source)
    brace = language.name != "python"
    stops = ("\n}",) if brace else language.stop_sequences
    problems = []
    for row in rows:
        setup = _cpp_setup(row["prompt"]) if language.name == "cpp" else ""
        problems.append(Problem(task_id=row["task_id"], prompt=row["prompt"], tests=row["test"], stop_sequences=stops,
                                canonical_solution=row.get("canonical_solution"), setup=setup))
    return Task(name=f"humaneval-x:{language.name}", language=language, dataset=source, dataset_sha256=digest,
                keep_stop=brace, problems_list=problems)
