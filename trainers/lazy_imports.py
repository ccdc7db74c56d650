"""Optional libraries kept out of processes that do not use them (the start of every launched process).

bitsandbytes: peft and transformers import it whenever it is installed (transformers.Trainer imports peft),
and its import compiles kernels with torch.compile, pulling in torch._inductor: ~2.5 s of CPU per process,
a fifth of a training process's imports, for QLoRA only (trainers/lora/quantize.py).
"""

from __future__ import annotations

import sys

QUANTIZATION_LIBRARY = "bitsandbytes"


def keep_out_bitsandbytes() -> bool:
    """Make bitsandbytes look not installed in this process; True if it did (False: already imported).

    `None` in `sys.modules` is Python's own way to block an import: `importlib.util.find_spec` then reports the
    module missing, so peft's and transformers' availability checks skip it, and `import bitsandbytes` raises
    ImportError. Call it only in a process that will not quantize.
    """
    if QUANTIZATION_LIBRARY in sys.modules:
        return False
    sys.modules[QUANTIZATION_LIBRARY] = None
    return True
