"""`python -m trainers.predict` and the gradio app on a chat run: the prompt (`--prompt`, the page's prompt
box, the API's second input) is asked about each image through the model's own chat template, with the run's
generation settings, from a LoRA run's stock peft adapter on the rebuilt tiny Qwen2-VL base."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from PIL import Image

from conftest import ROOT

IMAGES = ROOT / "data" / "chat_shapes" / "images"
QUESTION = "How many circles?"
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Two steps of the Qwen2-VL LoRA demo, generating 3 new tokens (the demo's default is 4)."""
    from trainers.recipe import load_recipe
    from trainers.run import run_training

    root = tmp_path_factory.mktemp("chat_predict")
    os.environ["WANDB_MODE"] = "disabled"
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        overrides = [
            "training.max_steps=2",
            "data.max_val_samples=4",
            "evaluation.max_new_tokens=3",
            "reporting.plots=false",
            f"output_dir={root / 'run'}",
        ]
        run_training(load_recipe(ROOT / "recipes" / "qwen2_vl_lora.py", overrides, demo=True))
    finally:
        os.chdir(cwd)
    images = root / "images"
    images.mkdir()
    for name in ("val_0000.png", "val_0001.png"):
        shutil.copy(IMAGES / name, images / name)
    return {"dir": root / "run", "images": images}


def generated(run_dir, image_path, question: str, max_new_tokens: int) -> str:
    """What the stock transformers calls answer: the processor's chat template, then greedy `generate`."""
    from trainers.predict import load_run

    loaded = load_run(run_dir)
    processor = loaded.processor
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(text=[text], images=[Image.open(image_path).convert("RGB")], return_tensors="pt")
    with torch.no_grad():
        ids = loaded.model.generate(**inputs, do_sample=False, max_new_tokens=max_new_tokens)
    new = ids[:, inputs["input_ids"].shape[1] :]
    return processor.tokenizer.batch_decode(new, skip_special_tokens=True)[0].strip()


def test_each_evaluation_reports_a_finite_loss_beside_the_generation_metrics(run):
    """The Trainer's eval loss (on the assistant tokens of the validation conversations) next to exact match."""
    import math

    evals = [json.loads(line)["eval"] for line in (run["dir"] / "metrics.jsonl").read_text().splitlines()]
    assert evals and all(math.isfinite(e["loss"]) and "exact_match" in e for e in evals), evals


def test_predict_cli_asks_the_prompt_with_the_runs_settings(run, tmp_path, capsys):
    from trainers.predict import main

    out = tmp_path / "preds.jsonl"
    args = [str(run["dir"]), "--images", str(run["images"]), "--out", str(out)]
    assert main([*args, "--prompt", QUESTION]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["file"] for r in rows] == [str(run["images"] / n) for n in ("val_0000.png", "val_0001.png")]
    for row in rows:
        assert row["prompt"] == QUESTION
        assert row["answer"] == generated(run["dir"], row["file"], QUESTION, 3)
    assert main([*args, "--prompt", QUESTION, "--max_new_tokens", "1"]) == 0
    short = [json.loads(line)["answer"] for line in out.read_text().splitlines()]
    assert short == [generated(run["dir"], r["file"], QUESTION, 1) for r in rows]
    assert main([*args, "--prompt", "  "]) == 2
    assert "--prompt is empty" in capsys.readouterr().err


def test_app_has_a_prompt_box_and_answers_what_predict_says(run, tmp_path):
    from gradio_client import Client, handle_file

    from trainers.app import build_app
    from trainers.predict import predict

    demo = build_app(run["dir"], options={"prompt": QUESTION})
    boxes = [c["props"] for c in demo.config["components"] if c["props"].get("elem_id") == "option-prompt"]
    assert len(boxes) == 1 and boxes[0]["value"] == QUESTION  # --prompt on the command line fills the box
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    try:
        client = Client(demo.local_url, verbose=False)
        for question in (QUESTION, "Which colour does the square have?"):
            want = predict(run["dir"], run["images"], tmp_path / "p.jsonl", options={"prompt": question})
            for row in want:
                got, drawn = client.predict(handle_file(row["file"]), question, api_name="/predict")
                assert got == {"prompt": question, "answer": row["answer"]}
                assert Image.open(drawn).height > Image.open(row["file"]).height  # the answer drawn under it
        with pytest.raises(Exception, match="--prompt is empty"):
            client.predict(handle_file(want[0]["file"]), "", api_name="/predict")
    finally:
        demo.close()
