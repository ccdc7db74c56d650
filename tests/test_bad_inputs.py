"""The catalogue of bad inputs: each ends with one clear paragraph on stderr and exit status 2, never a traceback.

Every case goes through `launch.main` (the CLI's own entry point): a representative few as real
`python launch.py` subprocesses, the rest in-process (same code path, without ~4 s of imports each).
For each case the message must name where the problem is (file, line or key) and say what to do.
docs/errors.md lists the same cases with the message a user sees.
"""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import ROOT, SHAPES

PROGRESSIVE = "recipes/blip_progressive.py"

TINY_RECIPE = """
from trainers.models.blip import TinyBlipSpec
from trainers.recipe import CaptionData, Evaluation, Freeze, Model, Recipe, Reporting, Stage, Training, Unfreeze

recipe = Recipe(
    name="tiny_bad_inputs",
    model=Model(id="tiny", family="blip", demo=TinyBlipSpec(), use_demo_model=True),
    data=CaptionData(train="{shapes}/train.json", val="{shapes}/val.json", images="{shapes}/images",
                     max_train_samples=16, max_val_samples=4),
    freeze=[Freeze("vision_model"), Unfreeze("vision_model.encoder.layers[-1:]")],
    stages=[Stage(epoch=1, unfreeze="vision_model.encoder.layers[-2:]")],
    training=Training(epochs=1, batch_size=8, lr=1e-3, logging_steps=1, resume="never"),
    evaluation=Evaluation(metrics=("rouge_l",), num_beams=1, max_length=8, batch_size=4),
    reporting=Reporting(wandb=False, plots=False),
)
"""


def _load_launch():
    spec = importlib.util.spec_from_file_location("launch_cli", ROOT / "launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LAUNCH = _load_launch()


def error_paragraph(stderr: str) -> str:
    """The `error: ...` paragraph (log lines before it are not part of the message)."""
    starts = [i for i, line in enumerate(stderr.splitlines()) if line.startswith("error: ")]
    assert starts, stderr[-2000:]
    return "\n".join(stderr.splitlines()[starts[-1] :]).strip()


def run_main(args: list[str]) -> tuple[int, str]:
    """`launch.main(args)` in this process with stderr captured (log handlers pointed at the capture too)."""
    import contextlib
    import io
    import logging

    err = io.StringIO()
    root = logging.getLogger()
    saved_root = root.handlers[:]
    library = [h for h in logging.getLogger("transformers").handlers if isinstance(h, logging.StreamHandler)]
    saved_streams = [h.stream for h in library]
    root.handlers = []  # launch.main's basicConfig then logs to the capture
    for handler in library:
        handler.stream = err
    try:
        with contextlib.redirect_stderr(err):
            try:
                rc = LAUNCH.main(args)
            except SystemExit as exc:  # argparse
                rc = exc.code
    finally:
        root.handlers = saved_root
        for handler, stream in zip(library, saved_streams, strict=True):
            handler.stream = stream
    return rc, err.getvalue()


def check(rc: int, stderr: str, expected: tuple[str, ...]) -> str:
    assert rc == 2, f"exit status {rc}:\n{stderr[-2000:]}"
    assert "Traceback" not in stderr, stderr[-4000:]
    message = error_paragraph(stderr)
    assert "\n\n" not in message, f"more than one paragraph:\n{message}"
    assert stderr.count("\nerror: ") + stderr.startswith("error: ") == 1, (
        "the paragraph is printed more than once"
    )
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in:\n{message}"
    if os.environ.get("ERROR_CATALOGUE_OUT"):  # docs/errors.md is regenerated from these messages
        with open(os.environ["ERROR_CATALOGUE_OUT"], "a") as out:
            out.write(
                json.dumps({"test": os.environ.get("PYTEST_CURRENT_TEST", ""), "message": message}) + "\n"
            )
    return message


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Bad inputs on disk: recipes, caption files, images, a ds_config."""
    root = tmp_path_factory.mktemp("bad")
    f: dict[str, Path] = {"root": root}

    def write(name: str, text: str) -> Path:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        f[name] = path
        return path

    write("tiny.py", textwrap.dedent(TINY_RECIPE).format(shapes=SHAPES))
    write("syntax.py", "from trainers.recipe import Recipe\n\nrecipe = Recipe(\n    name='x',\n")
    write("raises.py", "import math\n\nx = 1\nrecipe = make_recipe()\n")
    write("norecipe.py", "x = 1\n")
    write(
        "freeze_both.py", "from trainers.recipe import Freeze\n\nrule = Freeze('vision_model', regex='x')\n"
    )
    write(
        "bad_regex.py", "from trainers.recipe import ParamGroup\n\ng = ParamGroup('v', match='(unclosed')\n"
    )
    tiny = f["tiny.py"].read_text()
    write("typo_freeze.py", tiny.replace('Freeze("vision_model")', 'Freeze("vision_modle")'))
    write(
        "typo_stage.py",
        tiny.replace(
            'unfreeze="vision_model.encoder.layers[-2:]"', 'unfreeze="vision_model.encoder.layer[-2:]"'
        ),
    )
    write(
        "dup_groups.py",
        tiny.replace(
            "training=",
            "param_groups=[ParamGroup('a', match='vision'), ParamGroup('a', match='text')],\n    training=",
        ).replace("Stage, Training", "ParamGroup, Stage, Training"),
    )
    write("stage0.py", tiny.replace("Stage(epoch=1", "Stage(epoch=0"))
    write(
        "stages_order.py",
        tiny.replace(
            'stages=[Stage(epoch=1, unfreeze="vision_model.encoder.layers[-2:]")]',
            'stages=[Stage(epoch=2, unfreeze="vision_model.encoder.layers[-2:]"), Stage(epoch=1, unfreeze="text_decoder")]',
        ),
    )
    write("nodemo.py", tiny.replace("demo=TinyBlipSpec(), ", ""))
    write("stage_two_triggers.py", tiny.replace("Stage(epoch=1", "Stage(epoch=1, on_plateau=True"))
    write("plateau_no_es.py", tiny.replace("Stage(epoch=1", "Stage(on_plateau=True"))

    captions = json.loads((SHAPES / "train.json").read_text())
    names = list(captions)[:16]
    write("syntax.json", '{\n  "a.png": "ok",\n  "b.png" "missing colon"\n}\n')
    write("list.json", json.dumps(names))
    write("empty.json", "{}")
    write("nocaption.json", json.dumps({names[0]: "", names[1]: 3}))
    write("missing_images.json", json.dumps({**{n: captions[n] for n in names}, "ghost.png": "a ghost"}))
    write(
        "malformed.jsonl",
        "\n".join(
            [json.dumps({"image": n, "caption": captions[n]}) for n in names[:3]]
            + ['{"image": "x.png", "caption": ']
        )
        + "\n",
    )
    write("badentry.jsonl", json.dumps({"image": names[0]}) + "\n")
    images = root / "images"
    images.mkdir()
    for n in names:
        (images / n).write_bytes((SHAPES / "images" / n).read_bytes())
    (images / names[0]).write_bytes(b"this is not a png")
    f["images"] = images
    write("corrupt.json", json.dumps({n: captions[n] for n in names}))
    write("allbad.json", json.dumps({"ghost1.png": "a", "ghost2.png": "b"}))
    write("ds_syntax.json", '{"zero_optimization": {"stage": 2,}}\n')
    write("ds_list.json", "[1, 2]\n")
    write("not_a_dir", "a file where a directory should be\n")
    return f


# (case id, argv builder(files) -> argv, expected fragments). Fragments name the place and the fix.
IN_PROCESS = [
    (
        "recipe-raises",
        lambda f: [str(f["raises.py"]), "--dry-run"],
        ("raises.py:4", "NameError", "make_recipe", "Fix the recipe file"),
    ),
    (
        "recipe-no-recipe",
        lambda f: [str(f["norecipe.py"]), "--dry-run"],
        ("norecipe.py", "recipe = Recipe(...)"),
    ),
    (
        "recipe-freeze-both",
        lambda f: [str(f["freeze_both.py"]), "--dry-run"],
        ("freeze_both.py:3", "exactly one"),
    ),
    (
        "recipe-bad-regex",
        lambda f: [str(f["bad_regex.py"]), "--dry-run"],
        ("bad_regex.py:3", "not a valid regular expression"),
    ),
    (
        "override-unknown-section",
        lambda f: [PROGRESSIVE, "trainer.lr=1", "--dry-run"],
        ("'trainer.lr'", "Top-level sections"),
    ),
    (
        "override-no-equals",
        lambda f: [PROGRESSIVE, "training.epochs", "--dry-run"],
        ("'training.epochs'", "key=value"),
    ),
    (
        "override-int",
        lambda f: [PROGRESSIVE, "training.epochs=three", "--dry-run"],
        ("training.epochs", "expected an integer"),
    ),
    (
        "override-bool",
        lambda f: [PROGRESSIVE, "reporting.wandb=maybe", "--dry-run"],
        ("reporting.wandb", "true/false"),
    ),
    (
        "override-literal",
        lambda f: [PROGRESSIVE, "training.resume=sometimes", "--dry-run"],
        ("training.resume", "auto, never"),
    ),
    (
        "override-policy",
        lambda f: [PROGRESSIVE, "data.on_bad_sample=ignore", "--dry-run"],
        ("data.on_bad_sample", "fail, skip"),
    ),
    (
        "override-index",
        lambda f: [PROGRESSIVE, "stages.5.epoch=3", "--dry-run"],
        ("stages.5", "not a valid index"),
    ),
    (
        "override-none-section",
        lambda f: [str(f["tiny.py"]), "early_stopping.patience=3", "--dry-run"],
        ("'early_stopping'", "declare it in the recipe"),
    ),
    (
        "override-immutable",
        lambda f: [PROGRESSIVE, "freeze.0.target=text_decoder", "--dry-run"],
        ("freeze.0", "change it in the recipe file"),
    ),
    ("epochs-zero", lambda f: [PROGRESSIVE, "training.epochs=0", "--dry-run"], ("training.epochs", ">= 1")),
    ("lr-negative", lambda f: [PROGRESSIVE, "training.lr=-1e-4", "--dry-run"], ("training.lr", "> 0")),
    (
        "save-steps-zero",
        lambda f: [PROGRESSIVE, "training.save_steps=0", "--dry-run"],
        ("training.save_steps", ">= 1"),
    ),
    ("zero-stage-4", lambda f: [PROGRESSIVE, "launch.zero=4", "--dry-run"], ("launch.zero", "1, 2 or 3")),
    ("stage-epoch-0", lambda f: [str(f["stage0.py"]), "--dry-run"], ("stages[0].epoch=0", "freeze rules")),
    (
        "stage-two-triggers",
        lambda f: [str(f["stage_two_triggers.py"]), "--dry-run"],
        ("stages[0]", "epoch=1, on_plateau=True", "exactly one of epoch=N, step=N or on_plateau=True"),
    ),
    (
        "plateau-without-early-stopping",
        lambda f: [str(f["plateau_no_es.py"]), "--dry-run"],
        ("stages[0].on_plateau=True", "no early_stopping", "early_stopping=EarlyStopping(metric="),
    ),
    ("stages-not-increasing", lambda f: [str(f["stages_order.py"]), "--dry-run"], ("stages", "increasing")),
    ("duplicate-groups", lambda f: [str(f["dup_groups.py"]), "--dry-run"], ("param_groups", "'a'")),
    (
        "early-stopping-metric",
        lambda f: [PROGRESSIVE, "--demo", "early_stopping.metric=bleu", "--dry-run"],
        ("early_stopping.metric", "evaluation.metrics"),
    ),
    ("no-demo-model", lambda f: [str(f["nodemo.py"]), "--demo", "--dry-run"], ("no demo model", "--demo")),
    (
        "freeze-matches-nothing",
        lambda f: [str(f["typo_freeze.py"]), "--dry-run"],
        ("vision_modle", "vision_model"),
    ),
    ("stage-matches-nothing", lambda f: [str(f["typo_stage.py"]), "--dry-run"], ("stages[0]", "layer")),
    (
        "ds-config-missing",
        lambda f: [PROGRESSIVE, "--deepspeed", "/nonexistent/ds.json", "--dry-run"],
        ("/nonexistent/ds.json", "launch.deepspeed_config"),
    ),
    (
        "ds-config-syntax",
        lambda f: [PROGRESSIVE, "--deepspeed", str(f["ds_syntax.json"]), "--dry-run"],
        ("ds_syntax.json:1", "JSON"),
    ),
    (
        "ds-config-not-object",
        lambda f: [PROGRESSIVE, "--deepspeed", str(f["ds_list.json"]), "--dry-run"],
        ("ds_list.json", "JSON object"),
    ),
    (
        "offload-without-zero",
        lambda f: [PROGRESSIVE, "--offload", "--zero", "1", "--dry-run"],
        ("launch.offload", "--zero 2"),
    ),
    ("nproc-zero", lambda f: [PROGRESSIVE, "--nproc", "0", "--dry-run"], ("launch.nproc", ">= 1")),
    (
        "node-rank-outside",
        lambda f: [PROGRESSIVE, "--nnodes", "2", "--node-rank", "2", "--dry-run"],
        ("launch.node_rank=2", "--node-rank"),
    ),
    (
        "model-dir-missing",
        lambda f: [PROGRESSIVE, "model.id=/nonexistent/blip", "--dry-run", "--no-wandb"],
        ("/nonexistent/blip", "model.id"),
    ),
    # data: the run starts (tiny model) and stops at the data, before or at the first batch
    (
        "captions-missing",
        lambda f: [str(f["tiny.py"]), "data.train=/nonexistent/train.json"],
        ("/nonexistent/train.json", "captions path"),
    ),
    (
        "captions-syntax",
        lambda f: [str(f["tiny.py"]), f"data.train={f['syntax.json']}"],
        ("syntax.json", "line 3 column 11", "Fix the syntax"),
    ),
    (
        "captions-top-level-list",
        lambda f: [str(f["tiny.py"]), f"data.train={f['list.json']}"],
        ("list.json", "not an object"),
    ),
    (
        "captions-empty",
        lambda f: [str(f["tiny.py"]), f"data.val={f['empty.json']}"],
        ("empty.json", "add at least one entry"),
    ),
    (
        "captions-no-caption",
        lambda f: [str(f["tiny.py"]), f"data.train={f['nocaption.json']}"],
        ("nocaption.json", "2 entries", "on_bad_sample"),
    ),
    (
        "images-dir-missing",
        lambda f: [str(f["tiny.py"]), "data.images=/nonexistent/images"],
        ("/nonexistent/images", "image directory"),
    ),
    (
        "images-missing",
        lambda f: [str(f["tiny.py"]), f"data.train={f['missing_images.json']}"],
        ("'ghost.png'", "Add the images", "on_bad_sample"),
    ),
    (
        "image-corrupt",
        lambda f: [
            str(f["tiny.py"]),
            f"data.train={f['corrupt.json']}",
            f"data.images={f['images']}",
            f"data.val_images={SHAPES / 'images'}",
        ],
        ("cannot read the image", "Replace the file"),
    ),
    (
        "image-corrupt-in-worker",
        lambda f: [
            str(f["tiny.py"]),
            f"data.train={f['corrupt.json']}",
            f"data.images={f['images']}",
            f"data.val_images={SHAPES / 'images'}",
            "training.num_workers=1",
        ],
        ("cannot read the image", "Replace the file"),
    ),
    (
        "jsonl-malformed-line",
        lambda f: [str(f["tiny.py"]), f"data.train={f['malformed.jsonl']}"],
        ("malformed.jsonl:4", "not valid JSON", "Fix that line"),
    ),
    (
        "jsonl-bad-entry",
        lambda f: [str(f["tiny.py"]), f"data.train={f['badentry.jsonl']}"],
        ("badentry.jsonl:1", "caption"),
    ),
    (
        "all-samples-skipped",
        lambda f: [str(f["tiny.py"]), f"data.train={f['allbad.json']}", "data.on_bad_sample=skip"],
        ("allbad.json", "no usable samples", "missing_image: 2"),
    ),
    (
        "smaller-than-a-batch",
        lambda f: [str(f["tiny.py"]), "training.batch_size=32"],
        ("training.batch_size=32", "fewer than one global batch"),
    ),
    (
        "output-dir-unwritable",
        lambda f: [str(f["tiny.py"]), f"--output-dir={f['not_a_dir']}/run"],
        ("not_a_dir/run", "--output-dir"),
    ),
]

SUBPROCESS = [
    (
        "recipe-missing",
        ["recipes/nope.py", "--dry-run"],
        ("recipes/nope.py", "does not exist", "blip_progressive.py"),
    ),
    ("recipe-syntax", ["{syntax.py}", "--dry-run"], ("syntax.py:", "syntax error", "Fix the recipe file")),
    (
        "override-typo",
        [PROGRESSIVE, "training.epoch=3", "--dry-run"],
        ("'training.epoch'", "Did you mean: training.epochs"),
    ),
    ("override-float", [PROGRESSIVE, "training.lr=fast", "--dry-run"], ("training.lr", "expected a number")),
    (
        "bad-launcher-flag",
        [PROGRESSIVE, "--launcher", "mpirun", "--dry-run"],
        ("--launcher", "invalid choice"),
    ),
    (
        "captions-malformed-run",
        ["{tiny.py}", "data.train={syntax.json}"],
        ("syntax.json", "line 3 column 11"),
    ),
]


@pytest.mark.parametrize(("case", "argv", "expected"), IN_PROCESS, ids=[c[0] for c in IN_PROCESS])
def test_bad_input_in_process(case, argv, expected, files, monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    args = argv(files)
    if not any(a.startswith("--output-dir") for a in args) and "--dry-run" not in args:
        args = [*args, f"--output-dir={tmp_path / 'out'}"]
    check(*run_main(args), expected)


@pytest.mark.parametrize(("case", "argv", "expected"), SUBPROCESS, ids=[c[0] for c in SUBPROCESS])
def test_bad_input_subprocess(case, argv, expected, files, tmp_path):
    args = list(argv)
    for name, path in files.items():
        args = [a.replace("{" + name + "}", str(path)) for a in args]
    if "--dry-run" not in args:
        args.append(f"--output-dir={tmp_path / 'out'}")
    result = subprocess.run(
        [sys.executable, "launch.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"},
    )
    if (
        case == "bad-launcher-flag"
    ):  # argparse's own usage error: not our paragraph, but no traceback and rc 2
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert all(x in result.stderr for x in expected)
        return
    check(result.returncode, result.stderr, expected)


def test_disk_full_during_checkpoint_save(files, monkeypatch, tmp_path):
    """ENOSPC while a checkpoint is written: one paragraph, the partial save removed, nothing half-written left."""
    from trainers.trainer import RecipeTrainer

    def full(self, output_dir):
        (Path(output_dir) / "rng_state.pth").write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(RecipeTrainer, "_save_rng_state", full)
    out = tmp_path / "out"
    message = check(
        *run_main([str(files["tiny.py"]), f"--output-dir={out}"]),
        ("checkpoint-2", "disk is full", "free space", "rerun the same command"),
    )
    assert str(out / "checkpoints") in message
    assert not list((out / "checkpoints").iterdir())  # no checkpoint-2, no tmp-checkpoint-2


def test_catalogue_size():
    assert len(IN_PROCESS) + len(SUBPROCESS) + 1 >= 30


# ------------------------------------------------------------------------------------------------------------
# Reruns into an output dir holding another run, metric names, data paths: exit status exactly 2, before any
# model is loaded. `more_files` adds what these cases need next to the `files` above.

MORE_IN_PROCESS = [
    (
        "metric-unknown",
        lambda f: [str(f["tiny.py"]), "evaluation.metrics=bleu", "--dry-run"],
        (
            "evaluation.metrics",
            "'bleu'",
            "did you mean 'bleu_4'",
            "supported: meteor, rouge_l, cider_d, bleu_4",
        ),
    ),
    (
        "metric-empty",
        lambda f: [str(f["tiny.py"]), "evaluation.metrics=", "--dry-run"],
        ("evaluation.metrics is empty", "meteor"),
    ),
    (
        "early-stopping-mean-part-unknown",
        lambda f: [str(f["es_typo.py"]), "--dry-run"],
        ("early_stopping.metric", "'cidr_d'", "Did you mean 'cider_d'?", "evaluation.metrics"),
    ),
    (
        "data-not-found",
        lambda f: [PROGRESSIVE, "--no-wandb"],
        (
            "data/captions/train.json",
            "data/captions/images",
            "Salesforce/blip-image-captioning-base",
            '{"0001.jpg": ',
            "JSONL",
            "--demo",
        ),
    ),
    (
        "rerun-changed-recipe",
        lambda f: [
            str(f["tiny.py"]),
            f"--output-dir={f['finished_run']}",
            "training.resume=auto",
            "training.batch_size=4",
            "training.lr=1e-4",
        ],
        (
            "training.batch_size: 8 -> 4",
            "training.lr: 0.001 -> 0.0001",
            "checkpoint-2",
            "--output-dir",
            "training.resume=never",
            "previous-1",
            "training.resume=force",
        ),
    ),
    (
        "rerun-other-world-size",
        lambda f: [str(f["tiny.py"]), f"--output-dir={f['two_rank_run']}", "training.resume=auto"],
        ("world size (processes): 2 -> 1", "training.resume=force"),
    ),
]


@pytest.fixture(scope="module")
def more_files(files) -> dict[str, Path]:
    """A recipe with a typo in a mean(...) part; finished runs of tiny.py (1 rank and 2 ranks) to rerun into."""
    from trainers.checkpoints import finalize_checkpoint, recipe_hash
    from trainers.recipe import load_recipe
    from trainers.recipe.config import to_dict
    from trainers.rerun import resolved_recipe_dict

    f = dict(files)
    tiny = files["tiny.py"].read_text()
    es_typo = files["root"] / "es_typo.py"
    es_typo.write_text(
        tiny.replace("Recipe, Reporting", "EarlyStopping, Recipe, Reporting, mean")
        .replace('metrics=("rouge_l",)', 'metrics=("rouge_l", "cider_d")')
        .replace(
            "reporting=",
            'early_stopping=EarlyStopping(metric=mean("rouge_l", "cidr_d"), patience=2),\n    reporting=',
        )
    )
    f["es_typo.py"] = es_typo
    for name, world in (("finished_run", 1), ("two_rank_run", 2)):
        out = files["root"] / name
        recipe = load_recipe(files["tiny.py"], [f"output_dir={out}"])
        out.mkdir()
        (out / "recipe.json").write_text(json.dumps(resolved_recipe_dict(recipe)))
        tmp = out / "checkpoints" / "tmp-checkpoint-2"
        tmp.mkdir(parents=True)
        (tmp / "model.safetensors").write_bytes(b"weights")
        (tmp / "trainer_state.json").write_text(json.dumps({"global_step": 2, "max_steps": 2}))
        finalize_checkpoint(
            tmp, out / "checkpoints" / "checkpoint-2", 2, 1.0, recipe_hash(to_dict(recipe)), world
        )
        (out / "training_summary.json").write_text(
            json.dumps({"global_steps": 2, "config": resolved_recipe_dict(recipe)})
        )
        f[name] = out
    return f


@pytest.mark.parametrize(("case", "argv", "expected"), MORE_IN_PROCESS, ids=[c[0] for c in MORE_IN_PROCESS])
def test_more_bad_inputs_exit_2_before_any_model(case, argv, expected, more_files, monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setattr("trainers.plan.load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    args = argv(more_files)
    if not any(a.startswith("--output-dir") for a in args) and "--dry-run" not in args:
        args = [*args, f"--output-dir={tmp_path / 'out'}"]
    before = {p: p.read_bytes() for p in more_files["root"].rglob("*") if p.is_file()}
    rc, stderr = run_main(args)
    assert rc == 2, stderr[-2000:]
    check(rc, stderr, expected)
    assert {p: p.read_bytes() for p in more_files["root"].rglob("*") if p.is_file()} == before
