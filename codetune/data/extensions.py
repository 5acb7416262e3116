"""The one table from file extension (or well-known file name) to language, used to detect the
language of every file `prepare` reads and to count files, bytes and tokens per language.

Names follow The Stack / MultiPL-E spelling (java, python, cpp, javascript, ...) so a source's
`languages: [java]` and the evaluation flow's language names agree.
"""

from __future__ import annotations

from pathlib import PurePosixPath

EXTENSIONS: dict[str, str] = {
    ".py": "python", ".pyi": "python", ".pyx": "cython",
    ".java": "java",
    ".kt": "kotlin", ".kts": "kotlin",
    ".scala": "scala",
    ".groovy": "groovy",
    ".c": "c", ".h": "c",
    ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".hpp": "cpp", ".hh": "cpp", ".hxx": "cpp", ".inl": "cpp",
    ".cs": "csharp",
    ".go": "go",
    ".rs": "rust",
    ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript", ".jsx": "javascript",
    ".ts": "typescript", ".tsx": "typescript",
    ".php": "php",
    ".rb": "ruby",
    ".swift": "swift",
    ".m": "objective-c", ".mm": "objective-c",
    ".r": "r", ".R": "r",
    ".jl": "julia",
    ".lua": "lua",
    ".pl": "perl", ".pm": "perl",
    ".sh": "shell", ".bash": "shell", ".zsh": "shell",
    ".ps1": "powershell",
    ".hs": "haskell",
    ".ml": "ocaml", ".mli": "ocaml",
    ".fs": "fsharp",
    ".ex": "elixir", ".exs": "elixir",
    ".erl": "erlang",
    ".clj": "clojure",
    ".dart": "dart",
    ".d": "d",
    ".f90": "fortran", ".f": "fortran",
    ".sql": "sql",
    ".sparql": "sparql", ".rq": "sparql",
    ".html": "html", ".htm": "html",
    ".css": "css", ".scss": "scss",
    ".md": "markdown",
    ".rst": "restructuredtext",
    ".tex": "tex",
    ".yaml": "yaml", ".yml": "yaml",
    ".toml": "toml",
    ".json": "json",
    ".xml": "xml",
    ".cmake": "cmake",
    ".proto": "protobuf",
    ".v": "verilog", ".sv": "systemverilog", ".vhd": "vhdl",
    ".asm": "assembly", ".s": "assembly", ".S": "assembly",
    ".zig": "zig",
    ".nim": "nim",
    ".vue": "vue",
    ".svelte": "svelte",
    ".ipynb": "jupyter",
}

FILE_NAMES: dict[str, str] = {
    "Makefile": "makefile", "makefile": "makefile", "GNUmakefile": "makefile",
    "Dockerfile": "dockerfile",
    "CMakeLists.txt": "cmake",
}

LANGUAGES = frozenset(EXTENSIONS.values()) | frozenset(FILE_NAMES.values())


def language_of(path: str) -> str | None:
    """The language of `path` by file name, then extension (exact case first, then lower case); None
    for anything not in the table (data files, images, unknown extensions)."""
    name = PurePosixPath(path).name
    if name in FILE_NAMES:
        return FILE_NAMES[name]
    suffix = PurePosixPath(name).suffix
    if not suffix:
        return None
    return EXTENSIONS.get(suffix) or EXTENSIONS.get(suffix.lower())


def unknown_languages(names: list[str]) -> list[str]:
    """Names in `names` that the table does not know (a typo in a source's `languages`)."""
    return [n for n in names if n not in LANGUAGES]
