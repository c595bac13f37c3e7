"""Files written whole or not at all, and read back with one clear error: the JSON and JSON-lines
files of run folders, sweep tables and the timing pass all go through here.

A write goes to a temporary file renamed onto the target (write_atomic), so a reader never sees half a
file and a failed write leaves the previous one whole; an OSError names the target, not the temporary.
"""
import contextlib
import json
import os
import warnings
from pathlib import Path

from errors import UserError


def write_atomic(path, write):
    """Call write(tmp_path), then rename tmp onto path, so readers never see a half-written file and a
    failed write leaves the previous file whole."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with _naming(path):
            write(tmp)
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _naming(path):
    """Make an OSError raised while writing path name path: a failed write() names no file, and the
    temporary file's name would mean nothing to the user."""
    try:
        yield
    except OSError as e:
        raise OSError(e.errno, e.strerror or str(e), str(path)) from e


def write_text(path, text, mode="w"):
    """Write (mode "w") or append (mode "a") text to path."""
    with open(path, mode) as f:
        f.write(text)


def write_json(path, obj):
    """Write obj as indented JSON, atomically."""
    write_atomic(path, lambda tmp: write_text(tmp, json.dumps(obj, indent=2) + "\n"))


def append_text(path, text):
    """Append text to path (not atomic: a line a crash cuts short is the reader's to skip)."""
    with _naming(path):
        write_text(path, text, "a")


def append_jsonl(path, obj):
    """Append one JSON line and flush it to disk."""
    with _naming(path), open(path, "a") as f:
        f.write(json.dumps(obj) + "\n")
        f.flush()
        os.fsync(f.fileno())


def write_jsonl(path, rows):
    """Write rows as JSON lines, atomically (used to trim a log back to its checkpoint)."""
    write_atomic(path, lambda tmp: write_text(tmp, "".join(json.dumps(r) + "\n" for r in rows)))


def read_json(path):
    """Read a JSON file; a missing or damaged one is a UserError naming it."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: missing") from None
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not readable JSON ({e})") from None


def read_jsonl(path):
    """Read a JSON-lines file. A truncated last line (a power cut mid-write) is skipped with a
    warning; a damaged line before it is an error."""
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError:
            if number == len(lines):
                warnings.warn(f"{path}: last line {number} is truncated; ignored")
            else:
                raise UserError(f"{path}, line {number}: not valid JSON; the log is damaged") from None
    return rows
