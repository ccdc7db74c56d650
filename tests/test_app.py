"""The gradio app of a finished run: served on 127.0.0.1, it answers `gradio_client` with what
`trainers.predict` says for the same image (a LoRA run's adapter, and the same weights merged as a full
model); a real headless Chromium uploads an image on the page and reads the prediction back (screenshot kept
in outputs/test-artifacts/, or $TEST_ARTIFACTS)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from cdp import Browser, ensure_chromium  # noqa: E402

RECIPE = ROOT / "recipes" / "vit_lora.py"
IMAGES = ROOT / "data" / "tiny_classes" / "val"
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", ROOT / "outputs" / "test-artifacts"))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A short LoRA demo run (its adapter in best/, merged/ as a full model) and a full-model run dir of it."""
    from trainers.recipe import load_recipe
    from trainers.run import run_training

    root = tmp_path_factory.mktemp("app")
    lora = root / "lora"
    os.environ["WANDB_MODE"] = "disabled"
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        run_training(
            load_recipe(
                RECIPE,
                [
                    "training.max_steps=2",
                    "data.max_val_samples=4",
                    "training.batch_size=8",
                    "lora.save_merged=true",
                    "reporting.plots=false",
                    f"output_dir={lora}",
                ],
                demo=True,
            )
        )
    finally:
        os.chdir(cwd)
    full = root / "full"
    full.mkdir()
    shutil.copy(lora / "recipe.json", full / "recipe.json")
    shutil.copytree(lora / "merged", full / "best")
    images = root / "images"
    images.mkdir()
    for name in ("circle", "triangle"):
        shutil.copy(sorted((IMAGES / name).iterdir())[0], images / f"{name}.png")
    return {"lora": lora, "full": full, "images": images}


@pytest.fixture(scope="module")
def app(runs):
    from trainers.app import build_app

    demo = build_app(runs["lora"])
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    yield demo
    demo.close()


def _expected(run_dir: Path, images: Path, tmp: Path) -> dict[str, dict]:
    from trainers.predict import predict

    return {Path(r.pop("file")).name: r for r in predict(run_dir, images, tmp / "preds.jsonl")}


def test_client_gets_what_predict_says_for_adapter_and_full_model(app, runs, tmp_path):
    from gradio_client import Client, handle_file

    from trainers.app import build_app

    expected = _expected(runs["lora"], runs["images"], tmp_path)
    client = Client(app.local_url, verbose=False)
    full_app = build_app(runs["full"])
    full_app.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    try:
        full_client = Client(full_app.local_url, verbose=False)
        for name, want in expected.items():
            got = client.predict(handle_file(str(runs["images"] / name)), api_name="/predict")
            assert (got["label"], got["class_id"]) == (want["label"], want["class_id"])
            assert got["scores"] == pytest.approx(want["scores"], abs=1e-6)  # a batch of 1 here, of 2 there
            merged = full_client.predict(handle_file(str(runs["images"] / name)), api_name="/predict")
            assert merged["label"] == want["label"] and merged["class_id"] == want["class_id"]
            assert merged["scores"] == pytest.approx(want["scores"], abs=1e-5)
    finally:
        full_app.close()
    assert set(want["scores"]) <= {"circle", "cross", "square", "triangle"}


def test_a_real_browser_uploads_an_image_and_reads_the_prediction(app, runs, tmp_path):
    expected = _expected(runs["lora"], runs["images"], tmp_path)["triangle.png"]
    browser = Browser(ensure_chromium())
    try:
        browser.open(app.local_url)
        browser.wait_for("document.querySelector('#image input[type=file]') !== null")
        browser.upload("#image input[type=file]", runs["images"] / "triangle.png")
        browser.wait_for("document.querySelector('#image img') !== null")
        browser.evaluate("document.querySelector('#predict-button').click()")
        text = browser.wait_for(
            "(() => { const t = document.querySelector('#prediction').innerText;"
            " return t.includes('class_id') ? t : null })()"
        )
        shot = browser.screenshot(ARTIFACTS / "app_prediction.png")
    finally:
        browser.close()
    shown = json.loads(text.split("\n", 1)[1].replace("\n", ""))  # the JSON view, one token per line
    assert shown["label"] == expected["label"] and shown["class_id"] == expected["class_id"]
    assert shot.read_bytes()[:4] == b"\x89PNG" and shot.stat().st_size > 10_000


def test_app_command_refuses_a_directory_that_is_not_a_run(tmp_path, capsys):
    from trainers.app import main

    assert main([str(tmp_path)]) == 2
    assert "no recipe.json" in capsys.readouterr().err


def test_without_gradio_the_app_says_how_to_install_it(runs, monkeypatch):
    from trainers.app import build_app
    from trainers.errors import RecipeError

    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio now raises ImportError
    with pytest.raises(RecipeError, match=r"pip install -e \"\.\[app\]\""):
        build_app(runs["lora"])


def test_predict_and_the_app_start_without_a_library_failure_line(runs, tmp_path):
    """bitsandbytes (imported with peft) logs that it could not fetch hub kernels on a CPU machine; neither
    tool shows that line, which reads like a failure of the tool itself."""
    import subprocess

    result = subprocess.run(
        [sys.executable, "-m", "trainers.predict", str(runs["lora"]), "--images", str(runs["images"])]
        + ["--out", str(tmp_path / "p.jsonl")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "kernels-community" not in result.stderr and "Failed to load" not in result.stderr, result.stderr
    from trainers import app, predict

    for module in (app, predict):  # the app's entry point quiets it the same way
        assert "quiet_bitsandbytes_import()" in Path(module.__file__).read_text()
