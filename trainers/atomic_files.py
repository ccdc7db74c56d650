"""Files a user keeps, written whole or not at all; a full disk or a read-only folder as one paragraph.

Every tool that writes a user's file (the VOC converter's JSONL, predictions, ablation reports, plots, the run
summary) writes a temporary file beside the target and renames it over the target only once it is complete
(`os.replace`, atomic on a POSIX filesystem). A conversion that fails half way, or a disk that fills while a
plot is drawn, leaves the previous file as it was and no truncated one in its place.

Saving a tensor file reports a full disk as a `RuntimeError` from torch's zip writer ("PytorchStreamWriter
failed writing file ... file write failed"), not an `OSError`: `write_failure` reads both.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO

from trainers.errors import UserFacingError

# A full disk as libraries word it: torch.save's zip writer (torch 2.x), safetensors (Rust: "os error 28"),
# and the OS's own text.
_DISK_FULL_TEXT = (
    "file write failed",
    "No space left on device",
    "Disk quota exceeded",
    "os error 28",
    "os error 122",
)
_TARGET = "atomic_target"


class WriteError(UserFacingError):
    """A file could not be written: the disk is full, the folder is read-only, the target is a directory."""


def temporary_sibling(path: Path) -> Path:
    """A hidden name beside `path` that keeps its suffix (matplotlib picks the image format from it)."""
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path to write; on success it becomes `path`, on any failure it is removed."""
    path = Path(path)
    if path.is_dir():
        raise WriteError(f"{path} is a directory; give a file name to write (e.g. {path / 'out'}).")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        _name_target(exc, path)
        raise


def failed_target(exc: BaseException) -> str | None:
    """The file an `atomic_path` write was for, when that is where `exc` came from."""
    return getattr(exc, _TARGET, None)


def _name_target(exc: BaseException, path: Path) -> None:
    """A write error (ENOSPC from write() carries no file name) remembers which file it was writing."""
    if getattr(exc, _TARGET, None) is None:
        with suppress(AttributeError, TypeError):
            setattr(exc, _TARGET, str(path))


@contextmanager
def atomic_open(path: Path | str, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """`open(path, mode)` whose content replaces `path` only when the block ends without an error."""
    with atomic_path(path) as tmp, open(tmp, mode, encoding=None if "b" in mode else encoding) as handle:
        yield handle


def write_text(path: Path | str, text: str) -> Path:
    with atomic_open(path) as handle:
        handle.write(text)
    return Path(path)


def is_write_failure(exc: BaseException) -> bool:
    """An OSError, or a library's own error (torch's zip writer, safetensors) saying the disk took no more."""
    return isinstance(exc, OSError) or disk_full(exc)


def disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(exc, Exception) and any(t in str(exc) for t in _DISK_FULL_TEXT)


def write_failure(
    exc: BaseException,
    target: Path | str,
    after: str,
    left: str = "Nothing half-written was left in its place",
) -> WriteError:
    """One paragraph for a failed write of `target`: what happened, `left` (the state of the files), the fix,
    then `after` (what the user does once it is fixed)."""
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    if disk_full(exc):
        what = "the disk is full"
        fix = "free space there, or write to a larger disk (--output-dir / output_dir= for a run)"
    elif isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        what = "permission denied"
        fix = "make the folder writable or choose another path"
    elif isinstance(exc, OSError) and exc.errno == errno.EISDIR:
        what = "it is a directory"
        fix = "give a file name"
    else:
        what = getattr(exc, "strerror", None) or type(exc).__name__
        fix = "fix the filesystem problem"
    return WriteError(
        f"Writing {target} failed: {what} ({type(exc).__name__}: {first}). {left}; {fix}, then {after}."
    )


@contextmanager
def reported_as_paragraph(target: Path | str, after: str) -> Iterator[None]:
    """A write failure inside the block (full disk, no permission, a directory) becomes `write_failure`'s one
    paragraph for `target`; our own errors and anything else pass through unchanged."""
    try:
        yield
    except UserFacingError:
        raise
    except Exception as exc:
        if not is_write_failure(exc):
            raise
        raise write_failure(exc, target, after) from None


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
