"""The prompt formats of prompt/completion tasks, in one place: training on pairs (`data.sources[].
prompt_template`), evaluating them (the `sql` and `sparql` tasks) and the playground's text-to-SQL mode
must put the question to the model the same way, or a fine-tuned model is evaluated on a format it never
saw.

A source's `prompt_template` is either a named format (`sql`, `sparql`) or a Python format string over
the row's fields, e.g. `"-- {question}\\n"`.
"""

from __future__ import annotations

SQL_PROMPT_TAIL = "SELECT"  # the prompt ends inside the answer, so completions start after SELECT
SCHEMA_FIELDS = ("context", "sql_context", "schema")
NAMED = ("sql", "sparql")


def sql_prompt(question: str, schema: str) -> str:
    return (f"{schema.strip()}\n\n-- Using valid SQLite, answer the following question for the tables provided "
            f"above.\n-- Question: {question.strip()}\n{SQL_PROMPT_TAIL}")


def sparql_prompt(question: str) -> str:
    return f"# Write a SPARQL query over DBpedia that answers the question.\n# Question: {question.strip()}\n"


def training_pair(template: str | None, row: dict, prompt_field: str, completion_field: str) -> tuple[str, str]:
    """(prompt, completion) for training, in the format the matching evaluation task prompts with.
    Raises KeyError/ValueError for a row the template cannot be filled from."""
    prompt, completion = row[prompt_field], row[completion_field]
    if template is None:
        return prompt, completion
    if template == "sql":
        schema = next((row[f] for f in SCHEMA_FIELDS if isinstance(row.get(f), str)), "")
        query = completion.strip()
        if not query[: len(SQL_PROMPT_TAIL)].upper() == SQL_PROMPT_TAIL:
            raise ValueError("the sql template needs a gold query starting with SELECT")
        return sql_prompt(prompt, schema), query[len(SQL_PROMPT_TAIL):]
    if template == "sparql":
        return sparql_prompt(prompt), completion.strip()
    return template.format(**row), completion
