"""bitsandbytes and deepspeed stay out of a launched process that does not use them (trainers/lazy_imports.py):
transformers and accelerate would import them, and bitsandbytes' import compiles kernels with torch.compile
(torch._inductor)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from trainers.lazy_imports import DEEPSPEED_LIBRARY, QUANTIZATION_LIBRARY, keep_out_bitsandbytes
from trainers.recipe import load_recipe

VIT_LORA = ROOT / "recipes" / "vit_lora.py"


def _launch_module():
    sys.path.insert(0, str(ROOT))
    import launch

    return launch


@pytest.fixture
def no_bitsandbytes_yet(monkeypatch):
    """This test process as a fresh one: neither library imported (restored afterwards, and a block left by
    the test lifted, with transformers' cached availability answers: later tests in this process quantize)."""
    monkeypatch.delitem(sys.modules, QUANTIZATION_LIBRARY, raising=False)
    monkeypatch.delitem(sys.modules, DEEPSPEED_LIBRARY, raising=False)
    yield
    for name in (QUANTIZATION_LIBRARY, DEEPSPEED_LIBRARY):
        if name in sys.modules and sys.modules[name] is None:
            del sys.modules[name]
    from transformers.utils import import_utils

    for check in ("is_bitsandbytes_available", "is_deepspeed_available"):
        cache_clear = getattr(getattr(import_utils, check, None), "cache_clear", None)
        if cache_clear is not None:
            cache_clear()


def test_blocked_import_reads_as_not_installed(no_bitsandbytes_yet):
    import importlib.util

    assert keep_out_bitsandbytes()
    assert importlib.util.find_spec(QUANTIZATION_LIBRARY) is None
    with pytest.raises(ImportError):
        __import__(QUANTIZATION_LIBRARY)
    assert not keep_out_bitsandbytes()  # once


@pytest.mark.parametrize(
    ("own_process", "extra", "deepspeed_config", "variants", "skipped"),
    [
        (True, [], None, False, [QUANTIZATION_LIBRARY, DEEPSPEED_LIBRARY]),
        (True, ["model.quantization=4bit"], None, False, [DEEPSPEED_LIBRARY]),  # QLoRA keeps bitsandbytes
        (
            True,
            ["training.optim=adamw_bnb_8bit"],
            None,
            False,
            [DEEPSPEED_LIBRARY],
        ),  # so does its 8-bit AdamW
        (
            True,
            [],
            "ds_configs/zero2.json",
            False,
            [QUANTIZATION_LIBRARY],
        ),  # a DeepSpeed config keeps deepspeed
        (True, ["launch.launcher=deepspeed"], None, False, [QUANTIZATION_LIBRARY]),  # so does its launcher
        (True, [], None, True, []),  # --ablate / --sweep may run another variant in this process
        (False, [], None, False, []),  # launch.main inside another program leaves its imports alone
    ],
)
def test_only_a_launched_process_skips_only_what_it_does_not_use(
    no_bitsandbytes_yet, own_process, extra, deepspeed_config, variants, skipped
):
    launch = _launch_module()
    recipe = load_recipe(VIT_LORA, extra, demo=True)
    args = argparse.Namespace(may_skip_libraries=own_process and not variants)
    assert launch.skip_unused_libraries(recipe, args, deepspeed_config) == skipped
    for name in (QUANTIZATION_LIBRARY, DEEPSPEED_LIBRARY):
        assert (sys.modules.get(name, "absent") is None) is (name in skipped), name


def test_a_launched_lora_dry_run_imports_neither_bitsandbytes_nor_inductor_nor_deepspeed(tmp_path):
    """The whole path of `python launch.py RECIPE --dry-run` (LoRA through peft) in a fresh process."""
    probe = (
        "import sys, launch\n"
        "status = launch.main(sys.argv[1:], own_process=True)\n"
        "print('status:', status, 'bitsandbytes:', sys.modules.get('bitsandbytes', 'absent'),"
        " 'deepspeed:', sys.modules.get('deepspeed', 'absent'),"
        " 'inductor:', 'torch._inductor.compile_fx' in sys.modules, 'peft:', 'peft' in sys.modules)\n"
    )
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run(
        [sys.executable, "-c", probe, str(VIT_LORA), "--demo", "--dry-run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert "trainable" in result.stdout.lower(), result.stdout[-3000:] + result.stderr[-3000:]
    assert (
        result.stdout.strip().splitlines()[-1]
        == "status: 0 bitsandbytes: None deepspeed: None inductor: False peft: True"
    ), (result.stdout[-3000:], result.stderr[-3000:])


def test_with_wandb_off_the_run_never_imports_it(monkeypatch):
    """Every W&B call after training starts asks `active_wandb()`, which reads sys.modules without importing."""
    from trainers.callbacks.overfitting import OverfittingSignal, _to_wandb
    from trainers.callbacks.preemption import _finish_wandb
    from trainers.reporting import wandb as reporting

    monkeypatch.delitem(sys.modules, "wandb", raising=False)
    reporting.log({"resources/train_seconds": 1.0}, step=1)
    reporting.finish_run({"best_metric": None})
    _finish_wandb()
    _to_wandb(
        OverfittingSignal(
            kind="metric_falling", since_epoch=1.0, since_step=4, detected_at_step=8, detail=""
        ),
        step=8,
    )
    assert reporting.active_wandb() is None
    assert "wandb" not in sys.modules
