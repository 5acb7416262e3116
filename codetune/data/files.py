"""Walk local code: a directory (skipping VCS and build dirs, honouring .gitignore) or a zip/tar archive
(e.g. a JDK's lib/src.zip), yielding raw bytes. Decoding and filtering happen later, so a binary or
non-UTF-8 file is counted and dropped by the filters, never a crash here.
"""

from __future__ import annotations

import os
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from codetune.errors import DataError

SKIP_DIRS = {".git", ".hg", ".svn", ".bzr", "__pycache__", "node_modules", ".venv", "venv", ".tox", ".mypy_cache"}
ARCHIVE_SUFFIXES = (".zip", ".jar", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


@dataclass(frozen=True)
class RawFile:
    path: str  # relative to the source root (or archive member name)
    data: bytes
    unreadable: bool = False  # the OS refused to read it; `data` is then a NUL-led marker


def is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def _gitignore_spec(directory: Path):
    ignore = directory / ".gitignore"
    if not ignore.is_file():
        return None
    import pathspec

    lines = ignore.read_text(encoding="utf-8", errors="replace").splitlines()
    return pathspec.GitIgnoreSpec.from_lines(lines)


def iter_directory(root: Path, max_file_bytes: int | None = None) -> Iterator[RawFile]:
    """Files under `root` in sorted order; .gitignore files apply to their own subtree."""
    specs: list[tuple[Path, object]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        specs = [(base, spec) for base, spec in specs if here == base or base in here.parents]
        spec = _gitignore_spec(here)
        if spec is not None:
            specs.append((here, spec))

        def ignored(path: Path, is_dir: bool, specs=specs) -> bool:
            for base, s in specs:
                rel = path.relative_to(base).as_posix() + ("/" if is_dir else "")
                if s.match_file(rel):
                    return True
            return False

        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not ignored(here / d, True))
        for name in sorted(filenames):
            path = here / name
            if ignored(path, False) or not path.is_file():
                continue
            yield from _read_one(path, root, max_file_bytes)


def _read_one(path: Path, root: Path, max_file_bytes: int | None) -> Iterator[RawFile]:
    rel = path.relative_to(root).as_posix() if path != root else path.name
    try:
        if max_file_bytes is not None and path.stat().st_size > max_file_bytes:
            # Too large: yield a marker-sized prefix so the size filter counts it without reading it all.
            with path.open("rb") as fh:
                yield RawFile(rel, fh.read(max_file_bytes + 1))
            return
        yield RawFile(rel, path.read_bytes())
    except OSError:
        yield RawFile(rel, b"\x00unreadable", unreadable=True)


def iter_archive(path: Path, max_file_bytes: int | None = None) -> Iterator[RawFile]:
    """Members of a zip or tar archive in stored order. A broken archive raises DataError naming it."""
    limit = None if max_file_bytes is None else max_file_bytes + 1
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                for info in zf.infolist():
                    if info.is_dir() or any(p in SKIP_DIRS for p in info.filename.split("/")):
                        continue
                    try:
                        with zf.open(info) as fh:
                            data = fh.read(limit) if limit else fh.read()
                    except (zipfile.BadZipFile, zlib.error, OSError, NotImplementedError):
                        # One corrupt or unsupported member (bad CRC, exotic compression): count it and go on.
                        yield RawFile(info.filename, b"\x00unreadable", unreadable=True)
                        continue
                    yield RawFile(info.filename, data)
            return
        with tarfile.open(path) as tf:
            for member in tf:
                if not member.isfile() or any(p in SKIP_DIRS for p in member.name.split("/")):
                    continue
                fh = tf.extractfile(member)
                if fh is not None:
                    yield RawFile(member.name, fh.read(limit) if limit else fh.read())
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise DataError(f"cannot read archive {path}: {exc}") from None


def iter_local(path: str | Path, max_file_bytes: int | None = None) -> Iterator[RawFile]:
    """A directory, an archive, or a single plain file."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"source not found: {path}")
    if path.is_dir():
        yield from iter_directory(path, max_file_bytes)
    elif is_archive(path):
        yield from iter_archive(path, max_file_bytes)
    else:
        yield from _read_one(path, path, max_file_bytes)
