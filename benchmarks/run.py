"""`python benchmarks/run.py [--smoke] ...`: the same as `python -m benchmarks.run_all`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.run_all import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
