"""The catalogue of bad inputs: each ends with one clear paragraph on stderr and exit status 2, never a traceback.

Every case goes through `launch.main` (the CLI's own entry point): a representative few as real
`python launch.py` subprocesses, the rest in-process (same code path, without ~4 s of imports each).
For each case the message must name where the problem is (file, line or key) and say what to do.
docs/errors.md lists the same cases with the message a user sees.
"""

from __future__ import annotations

import dataclasses
import errno
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT, SHAPES
from trainers.models import registry
from trainers.models.vit import VIT_CLASSIFICATION

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
def files(tmp_path_factory) -> Iterator[dict[str, Path]]:
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
    write(
        "group_decay.py",
        "from trainers.recipe import ParamGroup\n\ng = ParamGroup('vision', match='^vit', layer_decay=0.0)\n",
    )
    vit = (ROOT / "recipes" / "vit_layer_decay.py").read_text()
    write("no_layout.py", vit.replace('family="vit"', 'family="vit-no-layout"'))
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
    chat_image = str(ROOT / "data" / "chat_shapes" / "images" / "train_0000.png")

    def chat(messages: list, images: list) -> str:
        good = {
            "images": [chat_image],
            "messages": [
                {"role": "user", "content": "<image>How many circles?"},
                {"role": "assistant", "content": "four"},
            ],
        }
        return json.dumps(good) + "\n" + json.dumps({"images": images, "messages": messages}) + "\n"

    ask = {"role": "user", "content": "<image>How many circles?"}
    write("chat_no_answer.jsonl", chat([ask], [chat_image]))
    write("chat_image_count.jsonl", chat([ask, {"role": "assistant", "content": "two"}], [chat_image] * 2))
    write("chat_role.jsonl", chat([ask, {"role": "bot", "content": "two"}], [chat_image]))
    write(
        "chat_long.jsonl",
        chat(
            [
                {"role": "user", "content": "<image>" + "How many circles? " * 200},
                {"role": "assistant", "content": "two"},
            ],
            [chat_image],
        ),
    )
    import datasets

    datasets.disable_progress_bars()
    for name, row in (
        ("no_answer", {"messages": [ask], "images": [chat_image]}),
        (
            "image_count",
            {"messages": [ask, {"role": "assistant", "content": "two"}], "images": [chat_image] * 2},
        ),
        ("role", {"messages": [ask, {"role": "bot", "content": "two"}], "images": [chat_image]}),
    ):
        saved = root / f"chat_source_{name}"
        good = json.loads(chat([ask], []).splitlines()[0])
        datasets.Dataset.from_list([good, row]).save_to_disk(str(saved))
        write(f"chat_source_{name}.py", CHAT_SOURCE_RECIPE.format(path=saved))
    from source_sets import STICK, TINY_BOXES, coco_disk, edited_train_split, pairs_disk, prompted_disk

    shipped = {  # the first two rows of a shipped set, saved as a DatasetDict with a "train" split
        "boxes": lambda d: coco_disk(d, TINY_BOXES, {"train": "train.json"}, 2),
        "poses": lambda d: coco_disk(d, STICK, {"train": "train.json"}, 2),
        "prompted": lambda d: prompted_disk(d, 2),
        "pairs": lambda d: pairs_disk(d, 2),
    }
    for name, (recipe, columns, rows_of, edit) in SOURCE_CASES.items():  # row 1 made bad
        saved = edited_train_split(shipped[rows_of](root / f"{name}_good"), root / name, edit)
        write(f"{name}.py", SOURCE_RECIPE.format(recipe=recipe, path=saved, columns=columns))
    coco_images = [{"id": i, "file_name": n} for i, n in enumerate(names[:4])]
    coco_anns = [{"id": i, "image_id": i, "caption": captions[n]} for i, n in enumerate(names[:4])]
    write(
        "captions_unknown_image.json",
        json.dumps(
            {"images": coco_images, "annotations": [*coco_anns, {"id": 9, "image_id": 99, "caption": "x"}]},
            indent=1,
        ),
    )
    write(
        "captions_blank.json",
        json.dumps(
            {"images": coco_images, "annotations": [*coco_anns[:3], {**coco_anns[3], "caption": " "}]},
            indent=1,
        ),
    )
    from source_sets import yolo_export

    yolo = yolo_export(root / "yolo", 3)
    label = sorted((root / "yolo" / "labels" / "train").glob("*.txt"))[1]
    label.write_text(label.read_text() + "0 0.5 0.5 0.2\n")
    f["yolo_data.yaml"], f["yolo_label"] = yolo, label
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
    # a plug-in family that declares no layer layout (the ViT entry without its `layers`)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(registry.FAMILIES, "vit-no-layout", f"{__name__}:VIT_NO_LAYOUT")
        yield f


VIT_NO_LAYOUT = dataclasses.replace(VIT_CLASSIFICATION, name="vit-no-layout", layers=())

# (case id, argv builder(files) -> argv, expected fragments). Fragments name the place and the fix.
IN_PROCESS = [
    *(
        (
            f"chat-{name}",
            lambda f, name=name: [
                "recipes/qwen2_vl_lora.py",
                "--demo",
                f"data.train={f[f'chat_{name}.jsonl']}",
            ],
            (f"chat_{name}.jsonl:2", *fragments),
        )
        for name, fragments in (
            ("no_answer", ("no assistant turn",)),
            ("image_count", ("1 image placeholder", "2 image(s)")),
            ("role", ("role 'bot'", "system, user, assistant")),
            ("long", ("tokens with its image tokens", "model_max_length=512")),
        )
    ),
    *(
        (
            f"chat-source-{name}",
            lambda f, name=name: [str(f[f"chat_source_{name}.py"]), "--demo"],
            ("data.train row 1", f"chat_source_{name}", *fragments),
        )
        for name, fragments in (
            ("no_answer", ("no assistant turn",)),
            ("image_count", ("1 image placeholder", "2 image(s) in column 'images'")),
            ("role", ("role 'bot'", "system, user, assistant")),
        )
    ),
    *(
        (
            f"{task}-source-{name}",
            lambda f, task=task, name=name: [str(f[f"{task}_source_{name}.py"]), "--demo"],
            ("data.train row 1", f"{task}_source_{name}", *fragments),
        )
        for task, name, fragments in (
            (
                "detection",
                "box_outside",
                ("bbox [50.0, 50.0, 40.0, 40.0]", "reaches outside the 64x64 image"),
            ),
            ("detection", "empty_box", ("bbox [10.0, 10.0, 0.0, 8.0]", "non-positive width or height")),
            (
                "detection",
                "unknown_label",
                (
                    "category_id -1 is not among the train categories 0 (circle), 1 (square), 2 (triangle)",
                    "column 'objects.category', data.train.columns.box_labels",
                ),
            ),
            (
                "pose",
                "keypoint_count",
                ("instance 0", "keypoints holds 30 values", "the skeleton has 11 keypoints"),
            ),
            ("prompted", "empty_suffix", ("suffix '' is empty or not a string",)),
            (
                "retrieval",
                "no_caption",
                ("caption [] is not a non-empty caption", "data.train.columns.caption"),
            ),
        )
    ),
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
        "layer-decay-outside-0-1",
        lambda f: ["recipes/vit_layer_decay.py", "--demo", "training.layer_decay=1.5", "--dry-run"],
        ("training.layer_decay=1.5", "(0, 1]", "none to switch it off"),
    ),
    (
        "group-layer-decay-zero",
        lambda f: [str(f["group_decay.py"]), "--dry-run"],
        ("group_decay.py:3", "ParamGroup('vision').layer_decay=0.0", "(0, 1]"),
    ),
    (
        "layer-decay-family-without-layout",
        lambda f: [str(f["no_layout.py"]), "--demo", "--dry-run"],
        ("training.layer_decay=0.75", "'vit-no-layout'", "declares no layer layout", "LayerStack", "Remove"),
    ),
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
        "fsdp-with-zero",
        lambda f: ["recipes/vit_lora.py", "launch.engine=fsdp", "--zero", "2", "--dry-run"],
        ("launch.engine=fsdp", "launch.zero=2"),
    ),
    (
        "fsdp-with-stages",
        lambda f: [PROGRESSIVE, "launch.engine=fsdp", "--dry-run"],
        ("stages=", "launch.engine=fsdp"),
    ),
    (
        "fsdp-with-qlora",
        lambda f: ["recipes/vit_lora.py", "launch.engine=fsdp", "model.quantization=4bit", "--dry-run"],
        ("model.quantization", "launch.engine=fsdp"),
    ),
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
        "coco-captions-unknown-image",
        lambda f: [str(f["tiny.py"]), f"data.train={f['captions_unknown_image.json']}"],
        (
            "captions_unknown_image.json:41:",
            "annotation id 9",
            "image_id 99 names no image entry",
            "Fix the image_id",
        ),
    ),
    (
        "coco-captions-blank-caption",
        lambda f: [str(f["tiny.py"]), f"data.train={f['captions_blank.json']}"],
        ("captions_blank.json:36:", "annotation id 3", "caption ' ' is blank", 'on_bad_sample="skip"'),
    ),
    (
        "yolo-label-line",
        lambda f: ["recipes/detr_lora.py", "--demo", f"data.train={f['yolo_data.yaml']}", "data.images=null"],
        ("labels/train/train_001.txt:", "'0 0.5 0.5 0.2' is not 'class cx cy w h'", "Fix that line"),
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
        "fp16-without-gpu",
        lambda f: [str(f["tiny.py"]), "training.precision=fp16"],
        ("training.precision=fp16", "CUDA", "training.precision=bf16"),
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
    # attention kernels the family's transformers modules lack, or this machine cannot run
    (
        "attention-unsupported-by-family",
        lambda f: [str(f["tiny.py"]), "model.attn_implementation=sdpa", "--dry-run"],
        ("model.attn_implementation=sdpa", "BlipForConditionalGeneration", "supports: eager"),
    ),
    (
        "flash-attention-unavailable",
        lambda f: ["recipes/vit_lora.py", "--demo", "model.attn_implementation=flash_attention_2"],
        (
            "model.attn_implementation=flash_attention_2",
            "flash-attn package",
            "model.attn_implementation=sdpa",
        ),
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


def test_disk_full_in_torch_save_is_the_zip_writers_runtime_error(files, monkeypatch, tmp_path):
    """torch.save on a full disk raises RuntimeError from its zip writer, not OSError: still the paragraph."""
    import torch

    from trainers.trainer import RecipeTrainer

    def full(self, output_dir):
        with open(Path(output_dir) / "rng_state.pth", "wb") as handle:
            handle.write(b"partial")
        raise RuntimeError(
            "[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file data/0: "
            "file write failed"
        )

    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(RecipeTrainer, "_save_rng_state", full)
    assert torch.save  # the real writer is what raises this in the field; here it is replayed
    out = tmp_path / "out"
    check(
        *run_main([str(files["tiny.py"]), f"--output-dir={out}"]),
        ("checkpoint-2", "disk is full", "PytorchStreamWriter", "rerun the same command"),
    )
    assert not list((out / "checkpoints").iterdir())


def test_disk_full_while_plots_are_written_is_not_a_complete_run(files, monkeypatch, tmp_path):
    """The disk fills while the plots are drawn: the paragraph, no truncated PNG, no summary; the rerun
    finishes the final files instead of reporting "already complete"."""
    from matplotlib.figure import Figure

    real = Figure.savefig

    def full(self, path, **kwargs):
        Path(path).write_bytes(b"\x89PNG\r\n\x1a\n")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setattr(Figure, "savefig", full)
    out = tmp_path / "out"
    argv = [str(files["tiny.py"]), f"--output-dir={out}", "reporting.plots=true", "training.resume=auto"]
    check(*run_main(argv), ("train_loss.png", "the disk is full", "not marked complete", "checkpoint-2"))
    assert not (out / "training_summary.json").exists()
    assert not (out / "plots").exists() or not list((out / "plots").iterdir())
    monkeypatch.setattr(Figure, "savefig", real)
    rc, stderr = run_main(argv)
    assert rc == 0 and "already complete" not in stderr, stderr[-2000:]
    assert (out / "training_summary.json").exists()
    assert (out / "plots" / "train_loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "plots" / "train_loss.png").stat().st_size > 1000


HOLD_LOCK = """
import sys, time
from pathlib import Path
from trainers import run_lock
run_lock.hold(Path(sys.argv[1]))
print("held", flush=True)
time.sleep(600)
"""


def test_a_second_run_into_a_busy_output_dir_names_the_holder_then_takes_over_a_dead_ones_lock(
    files, monkeypatch, tmp_path
):
    """Two launches into one output dir: the second stops before touching it (pid and host named); once the
    holder is dead (kill -9, its lock file left behind) the next run takes the stale lock over and trains."""
    import signal
    import socket

    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(out)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        argv = [str(files["tiny.py"]), f"--output-dir={out}", "training.resume=auto"]
        check(
            *run_main(argv),
            (
                f"pid {holder.pid} on host {socket.gethostname()}",
                str(out),
                "in use by another run",
                "--output-dir",
            ),
        )
        assert sorted(p.name for p in out.iterdir()) == [".run.lock"]  # nothing started there
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (out / ".run.lock").exists()  # left by the dead process: stale
    rc, stderr = run_main(argv)
    assert rc == 0, stderr[-3000:]
    assert f"taking over the lock left by pid {holder.pid}" in stderr
    assert (out / "training_summary.json").exists()


def test_data_changed_in_place_is_noticed_like_a_changed_recipe_key(files, monkeypatch, tmp_path, capsys):
    """Training images overwritten under the same names (and a caption edited): the rerun of the same command
    stops and says what changed, instead of "already complete" with the old data's metrics."""
    import shutil

    from PIL import Image

    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    data = tmp_path / "shapes"
    shutil.copytree(SHAPES, data)
    out = tmp_path / "out"
    argv = [
        str(files["tiny.py"]),
        f"--output-dir={out}",
        "training.resume=auto",
        f"data.train={data / 'train.json'}",
        f"data.val={data / 'val.json'}",
        f"data.images={data / 'images'}",
    ]
    rc, stderr = run_main(argv)
    assert rc == 0 and (out / "training_summary.json").exists(), stderr[-3000:]
    capsys.readouterr()
    assert (
        run_main(argv)[0] == 0 and "already complete" in capsys.readouterr().out
    )  # same data: nothing to do
    rewritten = sorted((data / "images").iterdir())[:2]
    for image in rewritten:
        Image.new("RGB", (32, 32), (0, 200, 0)).save(
            image, format="PNG" if image.suffix == ".png" else "JPEG"
        )
    captions = data / "val.json"
    captions.write_text(captions.read_text().replace("a ", "one ", 1))
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    message = check(
        *run_main(argv),
        (
            "data.images contents",
            "2 rewritten",
            rewritten[0].name,
            "data.val contents",
            "sha256",
            "training.resume=never",
            "training.resume=force",
            "--output-dir",
        ),
    )
    assert "data.train contents" not in message
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


# The cases above that are scenarios of their own (a fault injected, a run left behind), not one command line:
# test function -> (case name, what happens), for docs/errors.md (scripts/errors_doc.py).
SCENARIOS = {
    "test_disk_full_during_checkpoint_save": (
        "disk-full-during-save",
        "<recipe> (the disk fills while checkpoint-2 is written)",
    ),
    "test_disk_full_in_torch_save_is_the_zip_writers_runtime_error": (
        "disk-full-torch-zip-writer",
        "<recipe> (torch.save's zip writer finds the disk full while checkpoint-2 is written)",
    ),
    "test_disk_full_while_plots_are_written_is_not_a_complete_run": (
        "disk-full-during-plots",
        "<recipe> reporting.plots=true (the disk fills while the final plots are written)",
    ),
    "test_a_second_run_into_a_busy_output_dir_names_the_holder_then_takes_over_a_dead_ones_lock": (
        "output-dir-in-use",
        "<recipe> --output-dir=<dir> (another run is training in <dir>)",
    ),
    "test_data_changed_in_place_is_noticed_like_a_changed_recipe_key": (
        "data-changed-in-place",
        "<recipe> --output-dir=<finished run> (2 images and data.val rewritten under the same names)",
    ),
}


def test_catalogue_size():
    assert len(IN_PROCESS) + len(SUBPROCESS) + len(SCENARIOS) >= 83


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


# ------------------------------------------------------------------------------------------------------------
# The newer families' data (COCO detection and keypoints, Florence JSONL, classification folders) and files
# that are not UTF-8: `data_files` writes them next to the `files` above, each a copy of a shipped demo set
# with one thing wrong.

DATA_IN_PROCESS = [
    (
        "captions-not-utf8",
        lambda f: [str(f["tiny.py"]), f"data.train={f['latin1_captions.json']}", "--dry-run"],
        ("latin1_captions.json:1", "not UTF-8", "byte 0xe9", "iconv -f latin1 -t utf-8"),
    ),
    (
        "coco-not-utf8",
        lambda f: ["recipes/detr_lora.py", "--demo", f"data.train={f['latin1_coco.json']}", "--dry-run"],
        ("latin1_coco.json:1", "not UTF-8 text (data.train)", "byte 0xe9", "iconv"),
    ),
    (
        "yaml-not-utf8",
        lambda f: ["recipes/clip_minilm.py", "--demo", f"config={f['latin1.yaml']}", "--dry-run"],
        ("latin1.yaml:1", "not UTF-8 text (--config)", "column 4", "iconv"),
    ),
    (
        "florence-empty-train",
        lambda f: ["recipes/florence2_lora.py", "--demo", f"data.train={f['empty.jsonl']}", "--dry-run"],
        ("empty.jsonl (data.train)", "no lines to use", "Add at least one"),
    ),
    (
        "coco-annotation-not-object",
        lambda f: ["recipes/detr_lora.py", "--demo", f"data.train={f['ann_list.json']}", "--dry-run"],
        ("ann_list.json: annotations[1]", "is not a JSON object", "on_bad_sample"),
    ),
    (
        "coco-annotation-unknown-image",
        lambda f: ["recipes/detr_lora.py", "--demo", f"data.train={f['ann_ghost.json']}", "--dry-run"],
        ("ann_ghost.json: annotation id 2", "image_id 999", 'add the image to "images"'),
    ),
    (
        "pose-annotation-not-object",
        lambda f: ["recipes/vitpose_lora.py", "--demo", f"data.train={f['pose_list.json']}", "--dry-run"],
        ("pose_list.json: annotations[0]", "is not a JSON object", "keypoints"),
    ),
    (
        "pose-annotation-unknown-image",
        lambda f: ["recipes/vitpose_lora.py", "--demo", f"data.train={f['pose_ghost.json']}", "--dry-run"],
        ("pose_ghost.json: annotation id 1", "image_id 999", 'add the image to "images"'),
    ),
    (
        "pose-visibility",
        lambda f: [
            "recipes/vitpose_lora.py",
            "--demo",
            f"data.train={f['pose_visibility.json']}",
            "--dry-run",
        ],
        ("pose_visibility.json: annotation id 1", "visibility 5 is not 0, 1 or 2", "0 not labelled"),
    ),
    (
        "pose-keypoint-not-number",
        lambda f: ["recipes/vitpose_lora.py", "--demo", f"data.train={f['pose_null.json']}", "--dry-run"],
        ("pose_null.json: annotation id 1", "keypoints[4] is null, not a number"),
    ),
    (
        "classification-one-class",
        lambda f: [
            "recipes/vit_lora.py",
            "--demo",
            f"data.train={f['one_class'] / 'train'}",
            f"data.val={f['one_class'] / 'val'}",
            "--dry-run",
        ],
        ("one_class/train", "1 class ('circle')", "at least two"),
    ),
    (
        "mix-weights-sum-to-zero",
        lambda f: [str(f["mix_zero.py"]), "--demo", "--dry-run"],
        ("mix_zero.py:", "data.train: the weights sum to 0", "positive weight"),
    ),
    (
        "mix-source-of-another-task",
        lambda f: [str(f["mix_coco.py"]), "--demo", "--dry-run"],
        ("data.train[1] (a source of the mixed training split)", "train.json", "neither an image folder"),
    ),
    (
        "mix-sources-name-other-labels",
        lambda f: [str(f["mix_labels.py"]), "--demo", "--dry-run"],
        ("data.train[1]: this source's labels differ", "circle, square vs circle, cross, square, triangle"),
    ),
]

# The Qwen2-VL chat demo trained from a `datasets` source saved to disk (a messages column, file names as images).
CHAT_SOURCE_RECIPE = """import runpy
from trainers.data.source_config import Columns, DatasetSource
recipe = runpy.run_path("recipes/qwen2_vl_lora.py")["recipe"]
recipe.data.train = DatasetSource(kind="disk", path="{path}", columns=Columns(image="images", messages="messages"))
"""

# The detection, pose, prompted-generation and retrieval demos trained from a `datasets` source saved to disk
# (`tests/source_sets.py`: the shipped set's first two rows, row 1 made bad); data.val reads the same rows.
SOURCE_RECIPE = """import runpy
from trainers.data.source_config import Columns, DatasetSource
recipe = runpy.run_path("recipes/{recipe}.py")["recipe"]
for key in ("data.train", "data.val", "data.images"):
    recipe.demo.pop(key, None)
recipe.data.train = recipe.data.val = DatasetSource(kind="disk", path="{path}", split="train", columns=Columns({columns}))
recipe.data.images = None
if hasattr(recipe.data, "val_images"):
    recipe.data.val_images = None
"""


def _first_object(field: str, value: Any) -> Any:
    """An edit of row 1's first object (box, label or keypoint list): `value(old)`."""

    def edit(rows: dict[str, list]) -> None:
        values = rows["objects"][1][field]
        values[0] = value(values[0])

    return edit


def _row_one(column: str, value: Any) -> Any:
    return lambda rows: rows[column].__setitem__(1, value)


_BOXES = 'image="image", boxes="objects.bbox", box_labels="objects.category"'
# file name -> (demo recipe, Columns(...), shipped set, edit of row 1); the cases are `*-source-*` in IN_PROCESS
SOURCE_CASES = {
    "detection_source_box_outside": (
        "detr_lora",
        _BOXES,
        "boxes",
        _first_object("bbox", lambda box: [50.0, 50.0, 40.0, 40.0]),  # a 64x64 image
    ),
    "detection_source_empty_box": (
        "detr_lora",
        _BOXES,
        "boxes",
        _first_object("bbox", lambda box: [10.0, 10.0, 0.0, 8.0]),
    ),
    "detection_source_unknown_label": (
        "detr_lora",
        _BOXES,
        "boxes",
        _first_object("category", lambda label: -1),  # a ClassLabel's "no label"
    ),
    "pose_source_keypoint_count": (
        "vitpose_lora",
        'image="image", boxes="objects.bbox", keypoints="objects.keypoints"',
        "poses",
        _first_object("keypoints", lambda points: points[:-3]),  # 10 of the skeleton's 11
    ),
    "prompted_source_empty_suffix": (
        "florence2_lora",
        'image="image", prefix="prefix", suffix="suffix"',
        "prompted",
        _row_one("suffix", ""),
    ),
    "retrieval_source_no_caption": (
        "clip_minilm",
        'image="image", caption="captions"',
        "pairs",
        _row_one("captions", []),
    ),
}

# A mixed training split over the ViT demo (`data.train=[MixSource(...), ...]` in a recipe file).
MIX_RECIPE = """import runpy
from trainers.recipe import MixSource
recipe = runpy.run_path("recipes/vit_lora.py")["recipe"]
del recipe.demo["data.train"]
recipe.data.train = {mix}
"""


@pytest.fixture(scope="module")
def data_files(files) -> dict[str, Path]:
    import copy
    import shutil

    f = dict(files)
    root = files["root"]

    def write(name: str, payload: Any, encoding: str = "utf-8") -> None:
        text = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
        (root / name).write_bytes(text.encode(encoding))
        f[name] = root / name

    captions = json.loads((SHAPES / "train.json").read_text())
    latin = {name: captions[name] for name in list(captions)[:16]}
    latin[next(iter(latin))] = "un café crème"
    write("latin1_captions.json", latin, "latin-1")
    boxes = json.loads((ROOT / "data/tiny_boxes/train.json").read_text())
    bad = copy.deepcopy(boxes)
    bad["categories"][0]["name"] = "cercle é"
    write("latin1_coco.json", bad, "latin-1")
    write("latin1.yaml", "# réglages\ntraining:\n  epochs: 2\n", "latin-1")
    write("empty.jsonl", "")
    bad = copy.deepcopy(boxes)
    bad["annotations"][1] = [1, 2, 3]
    write("ann_list.json", bad)
    bad = copy.deepcopy(boxes)
    bad["annotations"][1]["image_id"] = 999
    write("ann_ghost.json", bad)
    pose = json.loads((ROOT / "data/stick_figures/train.json").read_text())
    for name, edit in (
        ("pose_list.json", lambda p: p["annotations"].__setitem__(0, "x")),
        ("pose_ghost.json", lambda p: p["annotations"][0].__setitem__("image_id", 999)),
        ("pose_visibility.json", lambda p: p["annotations"][0]["keypoints"].__setitem__(2, 5)),
        ("pose_null.json", lambda p: p["annotations"][0]["keypoints"].__setitem__(4, None)),
    ):
        bad = copy.deepcopy(pose)
        edit(bad)
        write(name, bad)
    for split in ("train", "val"):
        shutil.copytree(ROOT / "data/tiny_classes" / split / "circle", root / "one_class" / split / "circle")
    f["one_class"] = root / "one_class"
    for name in ("circle", "square"):
        shutil.copytree(ROOT / "data/tiny_classes/train" / name, root / "two_classes" / name)
    classes = "MixSource('data/tiny_classes/train', 3.0)"
    for name, mix in (
        ("mix_zero.py", "MixSource('data/tiny_classes/train', 0.0), MixSource('data/tiny_classes/val', 0)"),
        ("mix_coco.py", f"{classes}, MixSource('data/tiny_boxes/train.json', 1.0)"),
        ("mix_labels.py", f"{classes}, MixSource({str(root / 'two_classes')!r}, 1.0)"),
    ):
        write(name, MIX_RECIPE.format(mix=f"[{mix}]"))
    return f


@pytest.mark.parametrize(("case", "argv", "expected"), DATA_IN_PROCESS, ids=[c[0] for c in DATA_IN_PROCESS])
def test_bad_data_of_every_family(case, argv, expected, data_files, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    check(*run_main(argv(data_files)), expected)


def test_skipped_coco_annotations_are_counted(data_files):
    """Under on_bad_sample="skip" an annotation naming no image is dropped and counted, not silently lost."""
    from trainers.tasks.detection.data import DetectionBadSamples, read_categories, read_split

    path = data_files["ann_ghost.json"]
    bad = DetectionBadSamples(str(path), "skip")
    images = read_split(path, "data.train", ROOT / "data/tiny_boxes/images", read_categories(path, "x"), bad)
    assert bad.reasons == {"unknown_image": 1}
    boxes = json.loads((ROOT / "data/tiny_boxes/train.json").read_text())
    assert sum(len(i.labels) for i in images) == len(boxes["annotations"]) - 1


# ------------------------------------------------------------------------------------------------------------
# The tools (`python -m trainers.predict`, `trainers.app`, the VOC converter, `trainers.analysis.param_change`):
# the same promise, one paragraph and exit 2, before any model is loaded where the arguments alone are wrong.

TOOLS = {
    "predict": "trainers.predict",
    "app": "trainers.app",
    "voc": "trainers.tasks.prompted_generation.voc_to_jsonl",
    "param_change": "trainers.analysis.param_change",
}


def pose_predict(f: dict[str, Any], *options: Any) -> list[Any]:
    """`python -m trainers.predict` on the untrained pose run, with the box `options` under test."""
    return [f["pose_run"], "--images", f["good_images"], "--out", f["tools"] / "p.jsonl", *options]


TOOL_CASES = [
    (
        "predict-batch-size-zero",
        "predict",
        lambda f: [
            f["vit_run"],
            "--images",
            f["good_images"],
            "--out",
            f["tools"] / "p.jsonl",
            "--batch-size",
            "0",
        ],
        ("--batch-size 0", ">= 1"),
    ),
    (
        "predict-out-is-a-directory",
        "predict",
        lambda f: [f["vit_run"], "--images", f["good_images"], "--out", f["tools"]],
        ("is a directory", "--out names the JSON Lines file"),
    ),
    (
        "predict-out-read-only",
        "predict",
        lambda f: [f["vit_run"], "--images", f["good_images"], "--out", "/sys/preds.jsonl"],
        ("--out /sys/preds.jsonl", "cannot write in /sys", "writable folder"),
    ),
    (
        "predict-unreadable-image-fail",
        "predict",
        lambda f: [
            f["vit_run"],
            "--images",
            f["mixed_images"],
            "--out",
            f["tools"] / "p.jsonl",
            "--on-bad-image",
            "fail",
        ],
        ("broken.png: cannot read the image", "--on-bad-image skip"),
    ),
    (
        "predict-all-images-unreadable",
        "predict",
        lambda f: [f["vit_run"], "--images", f["broken_images"], "--out", f["tools"] / "p.jsonl"],
        ("none of its 1 image(s) can be read", "broken.png"),
    ),
    (
        "predict-pose-boxes-missing",
        "predict",
        lambda f: pose_predict(f, "--boxes", f["tools"] / "no_such_boxes.json"),
        ("--boxes", "no_such_boxes.json: no such file", "COCO detection results", '{"a.jpg": [[x, y, w, h]'),
    ),
    (
        "predict-pose-boxes-not-json",
        "predict",
        lambda f: pose_predict(f, "--boxes", f["tools"] / "not_json.json"),
        ("not_json.json: not valid JSON", "line 2", "Fix the file"),
    ),
    (
        "predict-pose-box-zero-width",
        "predict",
        lambda f: pose_predict(f, "--boxes", f["tools"] / "zero_width.json"),
        (
            "zero_width.json: 'b.png' box 0",
            "[5, 5, 0, 20]",
            "non-positive width or height",
            "not x1, y1, x2, y2",
        ),
    ),
    (
        "predict-pose-detector-not-a-detection-run",
        "predict",
        lambda f: pose_predict(f, "--detector", f["vit_run"]),
        (
            "--detector",
            "vit_run: a run of the vit family (classification), not a detection run",
            "outputs/detr_lora",
        ),
    ),
    (
        "predict-pose-box-and-boxes",
        "predict",
        lambda f: pose_predict(f, "--box", "10,5,50,70", "--boxes", f["tools"] / "boxes.json"),
        ("--box and --boxes given together", "pass one of --box x,y,w,h", "--detector RUN"),
    ),
    (
        "app-port-out-of-range",
        "app",
        lambda f: [f["vit_run"], "--port", "99999"],
        ("--port 99999", "1 to 65535"),
    ),
    (
        "voc-unreadable-image",
        "voc",
        lambda f: [
            "--voc",
            f["voc"] / "Annotations",
            "--images",
            f["voc"] / "Broken",
            "--out",
            f["tools"] / "v.jsonl",
        ],
        ("a.xml: its image", "cannot be read", "--skip-bad"),
    ),
    (
        "voc-out-is-a-directory",
        "voc",
        lambda f: [
            "--voc",
            f["voc"] / "Annotations",
            "--images",
            f["voc"] / "JPEGImages",
            "--out",
            f["tools"],
        ],
        ("is a directory", "--out names the JSONL file"),
    ),
    (
        "param-change-unfinished-run",
        "param_change",
        lambda f: [f["unfinished_run"]],
        ("best: not found", "the run has not finished", "Point RUN_DIR at a finished run"),
    ),
]


@pytest.fixture(scope="module")
def tool_files(files) -> dict[str, Path]:
    """Finished full-model ViT and ViTPose runs (the tiny demo models saved as best/, no training), pose box
    files, image folders with and without an unreadable file, a one-image VOC set, and a run directory without
    best/."""
    from PIL import Image
    from tiny_runs import untrained_run

    f = dict(files)
    root = files["root"] / "tools"
    run = untrained_run("recipes/vit_lora.py", "vit", "classification", root / "vit_run")
    pose_run = untrained_run("recipes/vitpose_lora.py", "vitpose", "pose", root / "pose_run")
    (root / "not_json.json").write_text('{"a.png": [[1, 2, 3, 4]],\n "b.png": [[1, 2, 3, 4]')
    (root / "zero_width.json").write_text(json.dumps({"a.png": [[1, 2, 30, 40]], "b.png": [[5, 5, 0, 20]]}))
    (root / "boxes.json").write_text(json.dumps({"a.png": [[1, 2, 30, 40]]}))
    unfinished = root / "unfinished_run"
    unfinished.mkdir()
    (unfinished / "recipe.json").write_text((run / "recipe.json").read_text())
    val = ROOT / "data/tiny_classes/val"
    good = sorted((val / "circle").iterdir())[:2] + sorted((val / "square").iterdir())[:1]
    for name in ("good_images", "mixed_images", "broken_images"):
        (root / name).mkdir()
    for image in good:
        for folder in ("good_images", "mixed_images"):
            (root / folder / f"{image.parent.name}_{image.name}").write_bytes(image.read_bytes())
    for folder in ("mixed_images", "broken_images"):
        (root / folder / "broken.png").write_bytes(b"not a png at all")
    voc = root / "voc"
    for sub in ("Annotations", "JPEGImages", "Broken"):
        (voc / sub).mkdir(parents=True)
    (voc / "Annotations" / "a.xml").write_text(
        "<annotation><filename>a.jpg</filename><object><name>drop</name><bndbox><xmin>1</xmin><ymin>1</ymin>"
        "<xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>"
    )
    Image.new("RGB", (16, 16)).save(voc / "JPEGImages" / "a.jpg")
    (voc / "Broken" / "a.jpg").write_bytes(b"\xff\xd8 truncated")
    f.update(vit_run=run, pose_run=pose_run, unfinished_run=unfinished, voc=voc, tools=root)
    f.update({name: root / name for name in ("good_images", "mixed_images", "broken_images")})
    return f


def run_tool(tool: str, args: list[str], monkeypatch) -> tuple[int, str]:
    """The tool's command line in this process (its `main`, or the converter's `run`), stderr captured."""
    import contextlib
    import io

    module = importlib.import_module(TOOLS[tool])
    args = [str(a) for a in args]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            if tool == "voc":
                monkeypatch.setattr(sys, "argv", ["voc_to_jsonl", *args])
                module.run()
                rc = 0
            else:
                rc = module.main(args)
        except SystemExit as exc:
            rc = exc.code
    return rc, err.getvalue()


@pytest.mark.parametrize(("case", "tool", "argv", "expected"), TOOL_CASES, ids=[c[0] for c in TOOL_CASES])
def test_bad_tool_input(case, tool, argv, expected, tool_files, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    check(*run_tool(tool, argv(tool_files), monkeypatch), expected)


def test_predict_skips_names_and_counts_an_unreadable_image(tool_files, monkeypatch):
    """The default `--on-bad-image skip`: the readable images are predicted, the bad one named on stderr and
    counted in the closing line, and the output holds one line per readable image."""
    import contextlib
    import io

    from trainers import predict

    out = tool_files["tools"] / "mixed.jsonl"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        rc = predict.main(
            [str(tool_files["vit_run"]), "--images", str(tool_files["mixed_images"]), "--out", str(out)]
        )
    assert rc == 0, stderr.getvalue()
    assert "Traceback" not in stderr.getvalue()
    assert f"skipped {tool_files['mixed_images'] / 'broken.png'}: cannot read the image" in stderr.getvalue()
    assert "3 images predicted" in stdout.getvalue() and "1 unreadable image(s) skipped" in stdout.getvalue()
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [Path(r["file"]).name for r in rows] == sorted(p.name for p in tool_files["good_images"].iterdir())


def test_app_port_taken_is_one_paragraph(tool_files, monkeypatch):
    """gradio's OSError for a port it cannot bind ends in the paragraph too (the page itself is test_app's)."""
    from trainers import app

    class Taken:
        def launch(self, **kwargs):
            raise OSError("Cannot find empty port in range: 7860-7860.")

    monkeypatch.setattr(app, "build_app", lambda *a, **k: Taken())
    check(
        *run_tool("app", [tool_files["vit_run"], "--port", "7860"], monkeypatch),
        ("--port 7860", "another --port"),
    )


# DeepSpeed configs judged by DeepSpeed's own config classes (filled as the Trainer fills them), YAML settings,
# dict-valued overrides and a missing Java runtime: exit 2 at recipe load / before any process starts.

_ZERO2 = json.loads((ROOT / "ds_configs" / "zero2.json").read_text())


def _zero2(**zero: object) -> dict:
    return {**_ZERO2, "zero_optimization": {**_ZERO2["zero_optimization"], **zero}}


DS_CONFIGS = {  # the configs a user copies from the transformers docs or edits by hand
    "ds_docs_zero_only.json": {"zero_optimization": {"stage": 2, "overlap_comm": True}},
    "ds_fp16_on.json": {**_ZERO2, "fp16": {"enabled": True}},
    "ds_bf16_on.json": {**_ZERO2, "bf16": {"enabled": True}},
    "ds_bucket_big.json": _zero2(allgather_bucket_size="big"),
    "ds_bucket_negative.json": _zero2(allgather_bucket_size=-5),
    "ds_offload_gpu.json": _zero2(offload_optimizer={"device": "gpu"}),
    "ds_offload_string.json": _zero2(offload_optimizer="cpu"),
    "ds_fp16_yes.json": {**_ZERO2, "fp16": {"enabled": "yes"}},
    "ds_hf_optimizer.json": {
        **_ZERO2,
        "optimizer": {"type": "AdamW", "params": {"lr": "auto", "weight_decay": "auto"}},
        "scheduler": {"type": "WarmupLR", "params": {"warmup_max_lr": "auto", "warmup_num_steps": "auto"}},
    },
}

FP32 = "training.precision=fp32"  # what the precision keys are matched against, on any machine

ENVIRONMENT_IN_PROCESS = [
    (
        "ds-config-no-batch-keys",
        lambda f: [PROGRESSIVE, "--deepspeed", str(f["ds_docs_zero_only.json"]), "--dry-run"],
        ("ds_docs_zero_only.json", "DeepSpeed rejects it", "train_micro_batch_size_per_gpu", '"auto"'),
        {},
    ),
    (
        "ds-config-fp16-under-fp32",
        lambda f: [PROGRESSIVE, FP32, "--deepspeed", str(f["ds_fp16_on.json"]), "--dry-run"],
        ("ds_fp16_on.json", "fp16.enabled=True (line 7)", "training.precision resolves to fp32", '"auto"'),
        {},
    ),
    (
        "ds-config-bf16-under-fp32",
        lambda f: [PROGRESSIVE, FP32, "--deepspeed", str(f["ds_bf16_on.json"]), "--dry-run"],
        ("ds_bf16_on.json", "bf16.enabled=True (line 10)", "training.precision resolves to fp32"),
        {},
    ),
    (
        "ds-config-bucket-not-a-number",
        lambda f: [PROGRESSIVE, "--deepspeed", str(f["ds_bucket_big.json"]), "--dry-run"],
        ("ds_bucket_big.json", "zero_optimization.allgather_bucket_size='big' (line 18)", "valid integer"),
        {},
    ),
    (
        "ds-config-bucket-negative",
        lambda f: [PROGRESSIVE, "--deepspeed", str(f["ds_bucket_negative.json"]), "--dry-run"],
        (
            "ds_bucket_negative.json",
            "zero_optimization.allgather_bucket_size=-5",
            "greater than or equal to 0",
        ),
        {},
    ),
    (
        "ds-config-offload-device-gpu",
        lambda f: [PROGRESSIVE, "--deepspeed", str(f["ds_offload_gpu.json"]), "--dry-run"],
        ("ds_offload_gpu.json", "zero_optimization.offload_optimizer.device='gpu'", "'cpu' or 'nvme'"),
        {},
    ),
    (
        "ds-config-offload-string",
        lambda f: [PROGRESSIVE, "--deepspeed", str(f["ds_offload_string.json"]), "--dry-run"],
        ("ds_offload_string.json", "zero_optimization.offload_optimizer must be an object", "'cpu'"),
        {},
    ),
    (
        "ds-config-fp16-enabled-yes",
        lambda f: [PROGRESSIVE, FP32, "--deepspeed", str(f["ds_fp16_yes.json"]), "--dry-run"],
        ("ds_fp16_yes.json", "fp16.enabled=yes", '"auto"'),
        {},
    ),
    (
        "ds-config-optimizer-with-param-groups",
        lambda f: [PROGRESSIVE, "--deepspeed", str(f["ds_hf_optimizer.json"]), "--dry-run"],
        ("ds_hf_optimizer.json", "'optimizer' and 'scheduler' sections", "2 param_groups", "remove them"),
        {},
    ),
    (
        "yaml-freeze-pattern-not-a-regex",
        lambda f: ["recipes/clip_minilm.py", "--config", str(f["bad_pattern.yaml"]), "--dry-run"],
        ("bad_pattern.yaml:4", "encoder_configs.text.freeze_pattern", "'(unclosed'", "not a valid regular"),
        {},
    ),
    (
        "override-whole-dict-field",
        lambda f: ["recipes/vit_lora.py", "data.extra_val=/data/hard", "--dry-run"],
        ("data.extra_val", "data.extra_val.NAME=VALUE"),
        {},
    ),
    (
        "override-inside-dict-entry",
        lambda f: ["recipes/vit_lora.py", "data.extra_val.hard.path=/data/hard", "--dry-run"],
        ("data.extra_val.hard.path", "set one whole entry"),
        {},
    ),
    (
        "meteor-without-java",
        lambda f: [PROGRESSIVE, "--dry-run"],
        (
            "evaluation.metrics",
            "meteor",
            "no `java` is on PATH",
            "default-jre-headless",
            "evaluation.metrics=",
        ),
        {"PATH": "<no java>"},
    ),
]


@pytest.fixture(scope="module")
def environment_files(files) -> dict[str, Path]:
    f = dict(files)
    for name, config in DS_CONFIGS.items():
        f[name] = files["root"] / name
        f[name].write_text(json.dumps(config, indent=2) + "\n")
    f["bad_pattern.yaml"] = files["root"] / "bad_pattern.yaml"
    f["bad_pattern.yaml"].write_text(
        "# a pattern that is not a regex\nencoder_configs:\n  text:\n    freeze_pattern: '(unclosed'\n"
    )
    return f


@pytest.mark.parametrize(
    ("case", "argv", "expected", "env"), ENVIRONMENT_IN_PROCESS, ids=[c[0] for c in ENVIRONMENT_IN_PROCESS]
)
def test_config_and_environment_bad_inputs(
    case, argv, expected, env, environment_files, monkeypatch, tmp_path
):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setattr("trainers.plan.load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    if env.get("PATH") == "<no java>":  # PATH without java (python runs in-process: nothing else needed)
        monkeypatch.setenv("PATH", str(tmp_path))
    check(*run_main(argv(environment_files)), expected)


def test_a_slurm_submission_in_the_same_process_leaves_the_next_launch_checking_java(monkeypatch, tmp_path):
    """A Slurm submission leaves the Java check to the job's nodes; that ends with its `launch.main` call."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("PATH", str(tmp_path))  # no java, no sbatch
    rc, err = run_main([PROGRESSIVE, "--launcher", "slurm", "--dry-run", f"output_dir={tmp_path / 'out'}"])
    assert rc == 0, err[-2000:]
    monkeypatch.setattr("trainers.plan.load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    check(*run_main([PROGRESSIVE, "--dry-run"]), ("no `java` is on PATH",))


def test_shipped_and_accepted_deepspeed_configs_pass_the_deepspeed_check(environment_files, monkeypatch):
    """The shipped configs, and Hugging Face's example with an optimizer / scheduler block under a recipe
    without param_groups and stages, are filled and accepted by DeepSpeed's own config classes."""
    from trainers.launchers.deepspeed_config import validate_deepspeed_config
    from trainers.recipe import load_recipe

    monkeypatch.chdir(ROOT)
    vit = load_recipe("recipes/vit_lora.py", [FP32])
    assert not vit.param_groups and not vit.stages
    for path in [*sorted((ROOT / "ds_configs").glob("*.json")), environment_files["ds_hf_optimizer.json"]]:
        config = validate_deepspeed_config(path, vit.training, 2, vit.param_groups, vit.stages, "fp32")
        assert config == json.loads(path.read_text())  # the file as written, not the filled copy
