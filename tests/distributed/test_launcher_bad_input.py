"""A bad input that only the workers can find (an unreadable image), run for real through each launcher that
`launch.py --launcher` starts with 2 ranks: the launcher reports its failed worker its own way, then our one
paragraph comes last, once (not once per rank), and `launch.py` exits 2 whatever the launcher returned."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_launchers_end_to_end import TINY_RECIPE, run

from conftest import ROOT, SHAPES

pytestmark = pytest.mark.distributed

OUR_FRAME = re.compile(
    rf'File "(?:{re.escape(str(ROOT))}|{re.escape(str(ROOT.resolve()))})/(?:launch\.py|trainers/)'
)


def assert_our_paragraph_is_last(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit 2; the last non-empty stderr block is our `error:` paragraph, printed once; no traceback of ours."""
    assert result.returncode == 2, (result.stdout + result.stderr)[-6000:]
    blocks = [b.strip() for b in re.split(r"\n\s*\n", result.stderr) if b.strip()]
    assert blocks and blocks[-1].startswith("error: "), result.stderr[-3000:]
    assert len(blocks[-1].splitlines()) == 1, blocks[-1]  # one paragraph, nothing after it
    assert [ln for ln in result.stderr.splitlines() if ln.startswith("error: ")] == [blocks[-1]]
    assert not OUR_FRAME.search(result.stderr), result.stderr[-6000:]
    for fragment in fragments:
        assert fragment in blocks[-1], blocks[-1]
    return blocks[-1]


@pytest.fixture(scope="module")
def unreadable(tmp_path_factory) -> dict[str, Path]:
    """16 training captions over copies of the shapes images: in `one/` the first image is not a PNG (one rank
    meets it, the other is stopped by the launcher), in `all/` none is (both ranks fail the same way)."""
    root = tmp_path_factory.mktemp("unreadable")
    captions = json.loads((SHAPES / "train.json").read_text())
    names = list(captions)[:16]
    (root / "train.json").write_text(json.dumps({n: captions[n] for n in names}))
    for kind, broken in (("one", names[:1]), ("all", names)):
        (root / kind).mkdir()
        for n in names:
            (root / kind / n).write_bytes(
                b"not a png" if n in broken else (SHAPES / "images" / n).read_bytes()
            )
    return {"train": root / "train.json", "one": root / "one", "all": root / "all"}


CASES = [
    ("torchrun", ["--launcher", "torchrun", "--nproc", "2"], "one"),
    ("deepspeed", ["--launcher", "deepspeed", "--zero", "2", "--nproc", "2"], "all"),
    ("accelerate", ["--launcher", "accelerate", "--nproc", "2"], "all"),
]


@pytest.mark.parametrize(("name", "flags", "images"), CASES, ids=[c[0] for c in CASES])
def test_a_bad_input_found_in_the_workers_ends_with_our_paragraph_and_exit_2(
    name, flags, images, unreadable, tmp_path
):
    result, seconds = run(
        [
            sys.executable,
            "launch.py",
            TINY_RECIPE,
            *flags,
            f"data.train={unreadable['train']}",
            f"data.images={unreadable[images]}",
            f"data.val_images={SHAPES / 'images'}",
            f"output_dir={tmp_path / 'run'}",
        ]
    )
    assert "launching: " in result.stdout, result.stderr[
        -3000:
    ]  # found in the workers, not before the launch
    message = assert_our_paragraph_is_last(
        result, "cannot read the image", str(unreadable[images]), "Replace the file"
    )
    waited = "stopped after another rank's error" in result.stderr  # a peer's broken collective, one line
    print(
        f"{name}: {seconds:.0f} s, {images} image(s) unreadable, peer logged its broken collective: {waited}; "
        f"last stderr block: {message[:60]}..."
    )


RANK_1_DIES = """
import os
import runpy
import signal

from transformers import TrainerCallback

recipe = runpy.run_path({tiny!r})["recipe"]


class Rank1DiesAfterCheckpoint2(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        if state.global_step == 2 and os.environ.get("RANK") == "1":
            os.kill(os.getpid(), signal.SIGKILL)  # as the out-of-memory killer would


recipe.callbacks = [Rank1DiesAfterCheckpoint2()]
"""


def test_a_rank_that_dies_is_named_last_with_the_checkpoint_a_rerun_resumes_from(tmp_path):
    """Rank 1 of a 2-rank torchrun run is SIGKILLed after checkpoint-2: torchrun's ChildFailedError report,
    then our one line last: rank 1 died, rerunning the same command resumes from checkpoint-2."""
    recipe = tmp_path / "dies.py"
    recipe.write_text(RANK_1_DIES.replace("{tiny!r}", repr(str(ROOT / TINY_RECIPE))))
    out = tmp_path / "run"
    result, seconds = run(
        [
            sys.executable,
            "launch.py",
            str(recipe),
            "--launcher",
            "torchrun",
            "--nproc",
            "2",
            "training.save_steps=2",
            f"output_dir={out}",
        ]
    )
    env_note = "ChildFailedError" in result.stderr  # torchrun's own report came first
    assert result.returncode == 1 and env_note, (result.stdout + result.stderr)[-6000:]
    blocks = [b.strip() for b in re.split(r"\n\s*\n", result.stderr) if b.strip()]
    last = blocks[-1]
    assert last.startswith("error: rank 1 (pid ") and len(last.splitlines()) == 1, result.stderr[-3000:]
    for fragment in ("died without a Python error", "kill -9", "resumes from checkpoint-2", str(out)):
        assert fragment in last, last
    assert (out / "checkpoints" / "checkpoint-2" / "checkpoint.json").is_file()
    print(f"rank died: {seconds:.0f} s; last line: {last}")
