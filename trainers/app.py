"""A web page that predicts with a finished run: `python -m trainers.app RUN_DIR [--port 7860] [--threshold 0.3]`.

The run's best model is loaded the way `trainers.predict` loads it (a full `best/` with `from_pretrained`,
a LoRA `best/` as a stock peft adapter on the base the run started from), and each uploaded image goes
through the task's `predict_images` hook: the page shows its JSON answer and, for tasks with a `draw` hook
(detection), the image with the prediction drawn. A task's text options (`Task.text_options`: the chat task's
`prompt`) get a text box each, filled with the option's default (or its `--key value` from the command line).
The same function is the app's API (`api_name="predict"`), the text options after the image:

    from gradio_client import Client, handle_file
    Client("http://127.0.0.1:7860/").predict(handle_file("cat.png"), api_name="/predict")
    Client("http://127.0.0.1:7860/").predict(handle_file("cat.png"), "How many circles?", api_name="/predict")

Extra `--key value` options go to the task as in `trainers.predict` (detection: `--threshold`). gradio is an
optional extra: `pip install -e ".[app]"`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from trainers.errors import RecipeError, UserFacingError

PREDICT = "predict"


def _gradio() -> Any:
    try:
        import gradio
    except ImportError:
        raise RecipeError(
            'the app needs gradio, an optional extra: pip install -e ".[app]" (or pip install gradio), then '
            "run python -m trainers.app RUN_DIR again."
        ) from None
    return gradio


def has_draw(task: Any) -> bool:
    from trainers.tasks.interface import Task

    return type(task).draw is not Task.draw


def build_app(
    run_dir: str | Path, task_name: str | None = None, options: dict[str, str] | None = None
) -> Any:
    """The gradio Blocks for one run (not launched)."""
    from trainers.predict import load_run

    gr = _gradio()
    run = load_run(run_dir, task_name)
    draws = has_draw(run.task)
    options = dict(options or {})
    texts = {key: options.pop(key, default) for key, default in run.task.text_options.items()}
    run.task.predict_images(
        run.model, run.processor, [_blank()], {**options, **texts}
    )  # bad options fail here, once

    def predict(image: Any, *values: str) -> Any:
        if image is None:
            raise gr.Error("Upload an image first.")
        asked = {**options, **dict(zip(texts, values, strict=True))}
        try:
            prediction = run.task.predict_images(run.model, run.processor, [image.convert("RGB")], asked)[0]
        except UserFacingError as error:  # e.g. an empty prompt: shown on the page, the app keeps serving
            raise gr.Error(str(error)) from None
        return (prediction, run.task.draw(image.convert("RGB"), prediction)) if draws else prediction

    name = run.recipe.get("name") or Path(run_dir).name
    kind = "LoRA adapter" if (Path(run_dir) / "best" / "adapter_config.json").is_file() else "full model"
    model = run.recipe["model"]
    base = f"the tiny demo model for {model['id']}" if model.get("use_demo_model") else model["id"]
    with gr.Blocks(title=f"{name}: {run.task.name}") as demo:
        gr.Markdown(f"## {name}\n{run.task.name} with the best model of `{run_dir}` ({kind}; base: {base})")
        with gr.Row():
            with gr.Column():
                image = gr.Image(type="pil", label="image", elem_id="image")
                boxes = [
                    gr.Textbox(value=value, label=key, elem_id=f"option-{key}")
                    for key, value in texts.items()
                ]
            with gr.Column():
                outputs = [gr.JSON(label="prediction", elem_id="prediction")]
                if draws:
                    outputs.append(gr.Image(type="pil", label="drawn", elem_id="drawn"))
        button = gr.Button("Predict", variant="primary", elem_id="predict-button")
        button.click(predict, inputs=[image, *boxes], outputs=outputs, api_name=PREDICT)
    return demo


def _blank() -> Any:
    from PIL import Image

    return Image.new("RGB", (32, 32))


def main(argv: list[str] | None = None) -> int:
    from trainers.lazy_imports import quiet_bitsandbytes_import
    from trainers.predict import parse_options

    quiet_bitsandbytes_import()  # no hub-kernel warning above the page's address

    parser = argparse.ArgumentParser(prog="python -m trainers.app", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a finished run's output directory (full or LoRA)")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--task", default=None, help="the task, when the family serves several")
    args, extra = parser.parse_known_args(argv)
    try:
        if not 1 <= args.port <= 65535:  # before the model is loaded
            raise RecipeError(
                f"--port {args.port}: a TCP port is 1 to 65535 (default 7860; ports under 1024 need root)."
            )
        demo = build_app(args.run_dir, args.task, parse_options(extra))
        try:
            demo.launch(server_name=args.host, server_port=args.port)
        except OSError as error:  # gradio: "Cannot find empty port in range: N-N" when it is taken
            raise RecipeError(
                f"--port {args.port} on --host {args.host}: cannot serve there ({error}). Stop what uses the "
                "port or pass another --port."
            ) from None
    except UserFacingError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
