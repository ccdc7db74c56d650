"""Peak memory of a training run: `torch.cuda.max_memory_allocated` on GPU, peak resident set size on CPU.

On Linux the RSS high-water mark (`VmHWM`) can be reset by writing 5 to `/proc/self/clear_refs`, so the
peak covers the training only, not the imports and data loading before it, and two runs in one process
do not share a peak. Where that reset is refused the value is the process's lifetime peak, and the
record says so (`since`). Each rank measures itself.
"""

from __future__ import annotations

import json
import re
import resource
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import TrainerCallback

PEAK_MEMORY_JSON = "peak_memory.json"
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


@dataclass
class PeakMemory:
    device: str  # "cuda" | "cpu"
    bytes: int
    measure: str  # what was read
    since: str  # "reset" (start of training) | "process start"


_reset_ok = False


def reset_peak_memory() -> bool:
    """Start a new peak; True when the CPU peak could be reset (else it keeps the process's lifetime peak)."""
    global _reset_ok
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    try:
        _CLEAR_REFS.write_text("5")
        _reset_ok = True
    except OSError:
        _reset_ok = False
    return _reset_ok


def _vm_hwm_bytes() -> int | None:
    try:
        match = re.search(r"^VmHWM:\s+(\d+)\s+kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) * 1024 if match else None


def peak_memory() -> PeakMemory:
    """The peak since the last `reset_peak_memory` (or process start)."""
    since = "reset" if _reset_ok else "process start"
    if torch.cuda.is_available():
        return PeakMemory(
            "cuda", int(torch.cuda.max_memory_allocated()), "torch.cuda.max_memory_allocated", since
        )
    hwm = _vm_hwm_bytes()
    if hwm is not None:
        return PeakMemory("cpu", hwm, "peak RSS (VmHWM)", since)
    # ru_maxrss is in kB on Linux and cannot be reset
    return PeakMemory(
        "cpu",
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "peak RSS (ru_maxrss)",
        "process start",
    )


class PeakMemoryCallback(TrainerCallback):
    """Resets the peak at train start, reads it at train end; the main process writes `peak_memory.json`."""

    def __init__(self, output_dir: Path | None = None) -> None:
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.peak: PeakMemory | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        reset_peak_memory()

    def on_train_end(self, args, state, control, **kwargs):
        self.peak = peak_memory()
        if self.output_dir is not None and state.is_world_process_zero:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / PEAK_MEMORY_JSON).write_text(json.dumps(asdict(self.peak), indent=2) + "\n")
