"""Sources: directories (.gitignore, VCS dirs), zip/tar archives, JSONL/JSON/Parquet rows, Hub datasets
through `datasets.load_dataset` on local paths, and every kind of bad input."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile

import pytest

from codetune.config import SourceConfig
from codetune.data.sources import Warnings, check_sources, iter_source
from codetune.errors import ConfigError, DataError


def items(src: SourceConfig, max_file_bytes: int = 10_000):
    warnings = Warnings()
    out = list(iter_source(0, src, max_file_bytes, warnings))
    return out, warnings


def test_directory_honours_gitignore_and_skips_vcs(tmp_path):
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD.py").write_text("x = 1\n")
    (tmp_path / ".gitignore").write_text("build/\n*.log\n")
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "Gen.java").write_text("class Gen {}\n")
    (tmp_path / "run.log").write_text("log\n")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "Main.java").write_text("class Main {}\n")
    (tmp_path / "src" / "notes.txt").write_text("not code\n")
    got, _ = items(SourceConfig(path=str(tmp_path)))
    by_path = {i.path: (i.language, i.reason) for i in got}
    assert by_path == {".gitignore": ("unknown", "language"), "src/Main.java": ("java", None),
                       "src/notes.txt": ("unknown", "language")}


def test_languages_restrict_a_source(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "B.java").write_text("class B {}\n")
    got, _ = items(SourceConfig(path=str(tmp_path), languages=["java"]))
    assert {i.path: i.reason for i in got} == {"B.java": None, "a.py": "language"}


def test_zip_and_tar_archives(tmp_path):
    zpath = tmp_path / "src.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("java.base/java/lang/Foo.java", "class Foo {}\n")
        zf.writestr("java.base/java/lang/", "")
    tpath = tmp_path / "src.tar.gz"
    with tarfile.open(tpath, "w:gz") as tf:
        data = b"def f():\n    return 1\n"
        info = tarfile.TarInfo("pkg/mod.py")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    zgot, _ = items(SourceConfig(path=str(zpath)))
    tgot, _ = items(SourceConfig(path=str(tpath)))
    assert [(i.path, i.language, i.data) for i in zgot] == [("java.base/java/lang/Foo.java", "java", b"class Foo {}\n")]
    assert [(i.path, i.language) for i in tgot] == [("pkg/mod.py", "python")]


def test_broken_archive_is_a_one_line_data_error(tmp_path):
    bad = tmp_path / "src.zip"
    bad.write_bytes(b"PK\x03\x04 this is not really a zip")
    with pytest.raises(DataError, match="cannot read archive .*src.zip"):
        items(SourceConfig(path=str(bad)))


def test_corrupt_member_is_counted_unreadable_not_fatal(tmp_path):
    zpath = tmp_path / "src.zip"
    with zipfile.ZipFile(zpath, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("A.java", "class A { int x; }\n" * 50)
        zf.writestr("B.java", "class B { int y; }\n" * 50)
    with zipfile.ZipFile(zpath) as zf:
        info = zf.getinfo("A.java")
    start = info.header_offset + 30 + len(info.filename)  # A.java's compressed bytes
    raw = bytearray(zpath.read_bytes())
    raw[start : start + info.compress_size] = b"\xff" * info.compress_size
    zpath.write_bytes(bytes(raw))
    got, _ = items(SourceConfig(path=str(zpath)))
    assert [(i.path, i.reason) for i in got] == [("A.java", "unreadable"), ("B.java", None)]


def test_missing_path_and_empty_glob(tmp_path):
    with pytest.raises(DataError, match="source not found"):
        items(SourceConfig(path=str(tmp_path / "nope")))
    with pytest.raises(DataError, match="matches nothing"):
        items(SourceConfig(path=str(tmp_path / "*.jsonl")))


def test_jsonl_rows_with_malformed_lines_and_missing_fields(tmp_path):
    path = tmp_path / "code.jsonl"
    path.write_text(
        json.dumps({"content": "x = 1\n", "path": "a.py"}) + "\n"
        + "{not json\n"
        + "\n"
        + json.dumps({"text": "wrong field"}) + "\n"
        + json.dumps({"content": "class A {}", "path": "A.java"}) + "\n"
        + "[1, 2]\n"
    )
    got, warnings = items(SourceConfig(path=str(path), path_field="path", languages=["python"]))
    assert [(i.path, i.language, i.reason) for i in got] == [
        ("a.py", "python", None), (f"{path}:2", "python", "malformed"), (f"{path}:4", "python", "missing_field"),
        ("A.java", "java", "language"), (f"{path}:6", "python", "malformed"),
    ]
    assert got[0].text == "x = 1\n"
    assert warnings.count == 3
    assert warnings.messages[0].startswith(f"{path} line 2: malformed JSON")
    assert "line 4: no text field 'content'" in warnings.messages[1]


def test_prompt_completion_pairs_from_json_array_and_parquet(tmp_path):
    rows = [{"question": "How many users?", "sql": "SELECT count(*) FROM users"},
            {"question": "Names?", "sql": "SELECT name FROM users"}]
    jpath = tmp_path / "pairs.json"
    jpath.write_text(json.dumps(rows))
    import pyarrow as pa
    import pyarrow.parquet as pq

    ppath = tmp_path / "pairs.parquet"
    pq.write_table(pa.Table.from_pylist(rows), ppath)
    for path in (jpath, ppath):
        got, _ = items(SourceConfig(path=str(path), prompt_field="question", completion_field="sql", languages=["sql"]))
        assert [(i.prompt, i.completion, i.language, i.reason) for i in got] == [
            ("How many users?", "SELECT count(*) FROM users", "sql", None),
            ("Names?", "SELECT name FROM users", "sql", None),
        ]


def test_hub_source_runs_load_dataset_on_a_local_dataset(tmp_path):
    ds_dir = tmp_path / "my-dataset"
    (ds_dir / "data").mkdir(parents=True)
    (ds_dir / "data" / "train.jsonl").write_text(
        "\n".join(json.dumps({"content": f"x = {i}\n", "path": f"m{i}.py"}) for i in range(3)) + "\n"
    )
    for streaming in (False, True):
        got, _ = items(SourceConfig(hub=str(ds_dir), split="train", streaming=streaming, path_field="path"))
        assert [(i.path, i.text) for i in got] == [(f"m{i}.py", f"x = {i}\n") for i in range(3)]
    limited, _ = items(SourceConfig(hub=str(ds_dir), max_files=2))
    assert len(limited) == 2
    with pytest.raises(DataError, match="has no field 'code'"):
        items(SourceConfig(hub=str(ds_dir), text_field="code"))


def test_unreachable_hub_dataset_is_one_line(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError) as err:
        items(SourceConfig(hub="bigcode/the-stack-smol", data_dir="data/java"))
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("cannot load dataset bigcode/the-stack-smol data_dir=data/java split=train")


def test_config_checks_before_any_work():
    with pytest.raises(ConfigError, match="data.sources` is empty"):
        check_sources([])
    with pytest.raises(ConfigError, match=r"sources\[0\].languages`: unknown language 'jav'"):
        check_sources([SourceConfig(path=".", languages=["jav"])])
    with pytest.raises(ValueError, match="exactly one of"):
        SourceConfig(path=".", hub="x/y")
    with pytest.raises(ValueError, match="go together"):
        SourceConfig(path=".", prompt_field="q")


def test_unreadable_file_is_counted_not_fatal(tmp_path, monkeypatch):
    import pathlib

    (tmp_path / "ok.py").write_text("x = 1\n")
    (tmp_path / "locked.py").write_text("y = 2\n")
    real_read = pathlib.Path.read_bytes

    def read_bytes(self):
        if self.name == "locked.py":
            raise PermissionError(13, "Permission denied")
        return real_read(self)

    monkeypatch.setattr(pathlib.Path, "read_bytes", read_bytes)
    got, _ = items(SourceConfig(path=str(tmp_path)))
    assert [(i.path, i.reason) for i in got] == [("locked.py", "unreadable"), ("ok.py", None)]
