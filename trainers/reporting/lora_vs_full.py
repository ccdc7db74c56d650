"""Old path of `trainers.analysis.lora_vs_full` (the LoRA-vs-full report and its command), kept for one release.

The command trains both runs, so it lives with the other analysis commands, above the run; this alias keeps
`python -m trainers.reporting.lora_vs_full ...` and its imports working.
"""

from __future__ import annotations

import sys

from trainers.analysis.lora_vs_full import (
    ADAPTER_WEIGHTS,
    BYTES_PER_PARAM,
    MB,
    WEIGHT_SUFFIXES,
    RealSizeRow,
    RunNumbers,
    checkpoint_bytes,
    lora_param_count,
    main,
    read_run,
    real_size_row,
    render_markdown,
    run_both,
    unique_params,
    write_report,
)

__all__ = [
    "ADAPTER_WEIGHTS",
    "BYTES_PER_PARAM",
    "MB",
    "WEIGHT_SUFFIXES",
    "RealSizeRow",
    "RunNumbers",
    "checkpoint_bytes",
    "lora_param_count",
    "main",
    "read_run",
    "real_size_row",
    "render_markdown",
    "run_both",
    "unique_params",
    "write_report",
]

if __name__ == "__main__":
    sys.exit(main())
