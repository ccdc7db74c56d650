"""bitsandbytes stays out of a launched process that quantizes nothing (trainers/lazy_imports.py): peft and
transformers would import it, and its import compiles kernels through torch.compile (torch._inductor)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from trainers.lazy_imports import QUANTIZATION_LIBRARY, keep_out_bitsandbytes
from trainers.recipe import load_recipe

VIT_LORA = ROOT / "recipes" / "vit_lora.py"


def _launch_module():
    sys.path.insert(0, str(ROOT))
    import launch

    return launch


@pytest.fixture
def no_bitsandbytes_yet(monkeypatch):
    """This test process as a fresh one: bitsandbytes not imported (restored afterwards)."""
    monkeypatch.delitem(sys.modules, QUANTIZATION_LIBRARY, raising=False)


def test_blocked_import_reads_as_not_installed(no_bitsandbytes_yet):
    import importlib.util

    assert keep_out_bitsandbytes()
    assert importlib.util.find_spec(QUANTIZATION_LIBRARY) is None
    with pytest.raises(ImportError):
        __import__(QUANTIZATION_LIBRARY)
    assert not keep_out_bitsandbytes()  # once


@pytest.mark.parametrize(("own_process", "extra", "variants", "skipped"), [
    (True, [], False, True),
    (True, ["model.quantization=4bit"], False, False),  # QLoRA keeps it
    (True, [], True, False),  # --ablate / --sweep may run a quantized variant in this process
    (False, [], False, False),  # launch.main inside another program leaves its imports alone
])
def test_only_a_launched_process_that_quantizes_nothing_skips_it(no_bitsandbytes_yet, own_process, extra,
                                                                variants, skipped):
    launch = _launch_module()
    recipe = load_recipe(VIT_LORA, extra, demo=True)
    args = argparse.Namespace(may_skip_bitsandbytes=own_process and not variants)
    assert launch.skip_bitsandbytes_unless_quantized(recipe, args) is skipped
    assert (sys.modules.get(QUANTIZATION_LIBRARY, "absent") is None) is skipped


def test_a_launched_lora_dry_run_imports_neither_bitsandbytes_nor_inductor(tmp_path):
    """The whole path of `python launch.py RECIPE --dry-run` (LoRA through peft) in a fresh process."""
    probe = (
        "import sys, launch\n"
        "status = launch.main(sys.argv[1:], own_process=True)\n"
        "print('status:', status, 'bitsandbytes:', sys.modules.get('bitsandbytes', 'absent'),"
        " 'inductor:', 'torch._inductor.compile_fx' in sys.modules, 'peft:', 'peft' in sys.modules)\n"
    )
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run([sys.executable, "-c", probe, str(VIT_LORA), "--demo", "--dry-run"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300, env=env)
    assert "trainable" in result.stdout.lower(), result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "status: 0 bitsandbytes: None inductor: False peft: True", (
        result.stdout[-3000:], result.stderr[-3000:])
