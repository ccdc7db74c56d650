"""One run at a time in an output dir: a lock held for the life of the run.

Two launches into one output dir would otherwise both train, interleave `metrics.jsonl` and overwrite each
other's checkpoints. The main process takes an exclusive `flock` on `<output_dir>/.run.lock` before it
looks at or moves anything there, and writes who holds it (pid, host, start time, command). The kernel drops
the lock when the process ends in any way, `kill -9` included, so a lock file left by a dead process is
stale by construction: the next run takes it over (and says whose it was). A run that ends on its own removes
the file (still holding the lock, and a taker checks it locked the file still in place). Linux NFS clients carry `flock`
as a POSIX lock to the server, so runs on two nodes sharing the folder exclude each other too.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import logging
import os
import socket
import sys
from contextlib import suppress
from pathlib import Path
from typing import Any

from trainers.errors import UserFacingError

logger = logging.getLogger(__name__)

LOCK_FILE = ".run.lock"  # hidden: `trainers.rerun` never moves or deletes it with the previous run

_held: dict[Path, int] = {}  # output dir -> open descriptor holding its lock (this process)


class OutputDirBusy(UserFacingError):
    """Another live run holds the output dir."""


def hold(output_dir: Path) -> None:
    """Take the output dir's lock for this process (until `release` or the process ends); raise if held."""
    output_dir = Path(output_dir).resolve()
    if output_dir in _held:
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / LOCK_FILE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise OutputDirBusy(_busy(output_dir, _read(path))) from None
        if _same_file(fd, path):
            break
        os.close(fd)  # the holder removed the file as we opened it (a clean exit): lock the new one
    previous = _read(path)
    if previous.get("pid") and not _is_me(previous):
        logger.warning(
            "%s: taking over the lock left by pid %s on %s (started %s), which is no longer running",
            path,
            previous.get("pid"),
            previous.get("host"),
            previous.get("started"),
        )
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(_me()) + "\n").encode(), 0)
    _held[output_dir] = fd


def check_free(output_dir: Path) -> None:
    """Raise `OutputDirBusy` when another process holds the output dir now (nothing is created or kept):
    `launch.py --launcher` asks before it starts any worker, whose main process then takes the lock."""
    path = Path(output_dir).resolve() / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # no lock file: nobody holds it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        raise OutputDirBusy(_busy(path.parent, _read(path))) from None
    finally:
        os.close(fd)


def release(output_dir: Path | None = None) -> None:
    """Drop this process's lock on `output_dir` (all of them: None) and remove the lock file: a run that ends
    leaves the folder as it found it. (A killed one leaves the file, unlocked: stale, taken over next time.)"""
    dirs = list(_held) if output_dir is None else [Path(output_dir).resolve()]
    for directory in dirs:
        fd = _held.pop(directory, None)
        if fd is not None:
            with suppress(OSError):
                (directory / LOCK_FILE).unlink()  # still locked while removed: no one else took it meanwhile
            os.close(fd)  # closing the descriptor releases the flock


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = path.stat()
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def _me() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(sys.argv)[:500],
    }


def _is_me(holder: dict[str, Any]) -> bool:
    return holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname()


def _read(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _busy(output_dir: Path, holder: dict[str, Any]) -> str:
    pid, host = holder.get("pid", "?"), holder.get("host", "?")
    started = f", started {holder['started']}" if holder.get("started") else ""
    command = f", running `{holder['command']}`" if holder.get("command") else ""
    return (
        f"output_dir {output_dir} is in use by another run: pid {pid} on host {host}{started}{command} holds "
        f"{output_dir / LOCK_FILE}. Two runs in one output dir would interleave their metrics and overwrite each "
        f"other's checkpoints, so nothing was started. Wait for that run to finish, stop it (kill {pid} on "
        f"{host}), or give this one another --output-dir (or output_dir=)."
    )
