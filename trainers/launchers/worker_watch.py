"""Which rank of a multi-rank run died first, for the one line `launch.py --launcher` prints last.

When one rank dies (killed by the OOM killer or `kill -9`, a segfault, an error of its own), the launcher
stops the others and prints its own report (torchrun's `ChildFailedError` block, several screens long). The
user wants two facts: which rank died, and what rerunning does. Each worker announces itself (rank, pid,
host) in the folder `launch.py` gives its launcher (`commands.WORKER_ERRORS_ENV`) and says how it ended when
it ends by itself; `launch.py` watches the announced processes of its host and records the order in which
they disappear. The first to go without having ended by itself is the one that died; the others were
stopped by the launcher after it.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

USER_ERROR = "user error"  # stopped on bad input: its paragraph is relayed, it did not die
AFTER_PEER = "stopped after a peer"  # its collective broke because another rank stopped
INTERRUPTED = "interrupted"  # Ctrl-C / SystemExit: stopped, not dead
_ENDED_ON_ITS_OWN = ("exit 0", USER_ERROR, AFTER_PEER, INTERRUPTED)
_STARTED = "worker-rank{rank:06d}.json"
_ENDED = "ended-rank{rank:06d}.json"
POLL_S = 0.02  # torchrun checks its workers every 0.1 s by default, then stops the rest


def announce(folder: str | None, env: Mapping[str, str]) -> None:
    """In a worker: rank, pid and host, so `launch.py` can tell which rank is gone."""
    _write(folder, _STARTED, env, {"pid": os.getpid(), "host": socket.gethostname()})


def ended(folder: str | None, env: Mapping[str, str], how: str) -> None:
    """In a worker that ends by itself (`how`: "exit 0", "user error", "RuntimeError"): not the one that died."""
    _write(folder, _ENDED, env, {"how": how})


@dataclass
class Death:
    rank: int
    pid: int
    host: str
    how: str | None  # the worker's own last word ("RuntimeError"), None: killed or crashed without one


@dataclass
class WorkerWatch:
    """Polls the announced workers of this host while the launcher runs; `first_dead` once it stopped."""

    folder: Path | None = None
    gone: dict[int, float] = field(default_factory=dict)  # rank -> when it was first seen gone
    first: Death | None = None  # `first_dead()`, kept once the launcher ended (its folder is then removed)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self, folder: Path) -> None:
        self.folder = folder
        self._thread = threading.Thread(target=self._poll, name="worker-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._check()  # a last look: a worker gone between two polls

    def first_dead(self) -> Death | None:
        """The earliest-gone rank that did not end by itself (an error of its own counts as dying); None when
        no rank of this host was seen dying (one on another node: the launcher's report names it)."""
        if self.folder is None:
            return None
        workers = _read_all(self.folder, "worker-rank")
        endings = _read_all(self.folder, "ended-rank")
        # seen gone in the same poll (the launcher stopped the others within one interval): the rank that
        # ended on an error of its own went first
        candidates = [
            (self.gone.get(rank, float("inf")), rank not in endings, rank)
            for rank in workers
            if endings.get(rank, {}).get("how") not in _ENDED_ON_ITS_OWN
            and (rank in self.gone or rank in endings)
        ]
        if not candidates:
            return None
        *_, rank = min(candidates)
        info = workers[rank]
        return Death(rank, info.get("pid", -1), info.get("host", "?"), endings.get(rank, {}).get("how"))

    def _poll(self) -> None:
        while not self._stop.wait(POLL_S):
            self._check()

    def _check(self) -> None:
        if self.folder is None:
            return
        host, now = socket.gethostname(), time.monotonic()  # one time per poll: its order says nothing
        for rank, info in _read_all(self.folder, "worker-rank").items():
            if rank not in self.gone and info.get("host") == host and _gone(int(info.get("pid", -1))):
                self.gone[rank] = now


def _gone(pid: int) -> bool:
    """No such process, or a zombie its launcher has not reaped yet (Linux /proc; elsewhere: signal 0)."""
    stat = Path(f"/proc/{pid}/stat")
    if Path("/proc/self/stat").exists():
        try:
            state = stat.read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True
        return state in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _write(folder: str | None, pattern: str, env: Mapping[str, str], payload: dict) -> None:
    if not folder:
        return
    rank = int(env.get("RANK", "0"))
    with suppress(OSError):  # the parent is gone: nobody to tell
        (Path(folder) / pattern.format(rank=rank)).write_text(json.dumps({"rank": rank, **payload}))


def _read_all(folder: Path, prefix: str) -> dict[int, dict]:
    found = {}
    for path in folder.glob(f"{prefix}*.json"):
        try:
            info = json.loads(path.read_text())
            found[int(info["rank"])] = info
        except (OSError, ValueError, KeyError, TypeError):
            continue  # being written
    return found
