"""Optional libraries kept out of launched processes that do not use them.

transformers and accelerate import these whenever they are installed, used or not:
- bitsandbytes (through peft, which transformers.Trainer imports): its import compiles kernels with
  torch.compile, pulling in torch._inductor: ~2.5 s of CPU per process, a fifth of a training process's
  imports, for QLoRA only (trainers/lora/quantize.py);
- deepspeed (accelerate's model unwrapping, when the Trainer is built): ~0.5 s, for a DeepSpeed config only.
"""

from __future__ import annotations

import logging
import sys

QUANTIZATION_LIBRARY = "bitsandbytes"
DEEPSPEED_LIBRARY = "deepspeed"


def keep_out(name: str) -> bool:
    """Make the library `name` look not installed in this process; True if it did (False: already imported).

    `None` in `sys.modules` is Python's own way to block an import: `importlib.util.find_spec` then reports the
    module missing, so the libraries' availability checks skip it, and `import name` raises ImportError. Call
    it only in a process that will not use the library.
    """
    if name in sys.modules:
        return False
    sys.modules[name] = None
    return True


def optimizer_uses_bitsandbytes(optim: str) -> bool:
    """Whether a Trainer optimizer name (`training.optim`) is one of bitsandbytes' (8-bit, paged, Lion, ...)."""
    return (
        optim.startswith(("paged_", "lion", "ademamix"))
        or "bnb" in optim
        or optim.endswith(("8bit", "32bit"))
    )


def keep_out_bitsandbytes() -> bool:
    """`keep_out("bitsandbytes")`: for processes that quantize nothing."""
    return keep_out(QUANTIZATION_LIBRARY)


def quiet_bitsandbytes_import() -> None:
    """Keep bitsandbytes' import-time warnings out of the terminal: on a CPU machine it logs that it could not
    fetch optional kernels from the hub (`kernels-community` ... `trust_remote_code`), a line that reads like a
    failure of the run or the app it appears above. Its errors still show."""
    logging.getLogger(QUANTIZATION_LIBRARY).setLevel(logging.ERROR)
