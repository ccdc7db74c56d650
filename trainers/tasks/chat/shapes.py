"""The shipped chat demo set: 64 px images of 1-4 circles and one square, with questions whose answer is in the
image ("How many circles?", "What colour is the square?").

    python -m trainers.tasks.chat.shapes data/chat_shapes

Circles are grey, the square is red, green, blue or yellow; shapes never overlap. Deterministic (seeded).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

SIZE = 64
COUNTS = ("one", "two", "three", "four")
COLOURS = {"red": (220, 30, 30), "green": (30, 170, 30), "blue": (30, 60, 220), "yellow": (230, 210, 20)}
COUNT_QUESTIONS = ("How many circles?", "How many circles are there?", "Count the circles.")
COLOUR_QUESTIONS = ("What colour is the square?", "Which colour does the square have?")


def _free(boxes: list[tuple[int, int, int, int]], box: tuple[int, int, int, int]) -> bool:
    x0, y0, x1, y1 = box
    return all(x1 + 2 < a or b + 2 < x0 or y1 + 2 < c or d + 2 < y0 for a, c, b, d in boxes)


def draw(rng: random.Random, circles: int, colour: str) -> Image.Image:
    image = Image.new("RGB", (SIZE, SIZE), (245, 245, 245))
    pen = ImageDraw.Draw(image)
    boxes: list[tuple[int, int, int, int]] = []
    side = rng.randint(12, 16)
    while True:
        x, y = rng.randint(1, SIZE - side - 1), rng.randint(1, SIZE - side - 1)
        square = (x, y, x + side, y + side)
        if _free(boxes, square):
            boxes.append(square)
            pen.rectangle(square, fill=COLOURS[colour])
            break
    placed = 0
    while placed < circles:
        r = rng.randint(5, 7)
        x, y = rng.randint(r + 1, SIZE - r - 2), rng.randint(r + 1, SIZE - r - 2)
        box = (x - r, y - r, x + r, y + r)
        if _free(boxes, box):
            boxes.append(box)
            pen.ellipse(box, fill=(90, 90, 90))
            placed += 1
    return image


def write(out: Path, train: int = 300, val: int = 60, seed: int = 0) -> None:
    """`train` / `val` images under out/images, and train.jsonl / val.jsonl with both questions per image."""
    rng = random.Random(seed)
    (out / "images").mkdir(parents=True, exist_ok=True)
    for split, n in (("train", train), ("val", val)):
        lines = []
        for i in range(n):
            circles, colour = rng.randint(1, len(COUNTS)), rng.choice(sorted(COLOURS))
            name = f"{split}_{i:04d}.png"
            draw(rng, circles, colour).save(out / "images" / name)
            for question, answer in (
                (rng.choice(COUNT_QUESTIONS), COUNTS[circles - 1]),
                (rng.choice(COLOUR_QUESTIONS), colour),
            ):
                messages = [
                    {"role": "user", "content": f"<image>{question}"},
                    {"role": "assistant", "content": answer},
                ]
                lines.append(json.dumps({"images": [name], "messages": messages}))
        (out / f"{split}.jsonl").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, nargs="?", default=Path("data/chat_shapes"))
    args = parser.parse_args()
    write(args.out)


if __name__ == "__main__":
    main()
