"""Caption–image pairs for the retrieval demo, written from the shipped shapes captioning set (no new images).

Each shapes image ("a red circle above a blue square") gets three captions that say the same thing: the
original, the same scene from the other object ("a blue square below a red circle"), and a framed variant
("a picture of a red circle above a blue square"). The files reference `data/shapes/images`.

    python -m trainers.tasks.retrieval.shape_pairs data/shapes data/shape_pairs --n-train 512
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

INVERSE = {"above": "below", "below": "above", "left of": "right of", "right of": "left of"}
_CAPTION = re.compile(
    r"^a (?P<first>\w+ \w+) (?P<relation>above|below|left of|right of) a (?P<second>\w+ \w+)$"
)


def paraphrases(caption: str) -> list[str]:
    """The caption, its mirrored statement and a framed variant; a caption of another form is kept alone."""
    match = _CAPTION.match(caption.strip())
    if match is None:
        return [caption]
    mirrored = f"a {match['second']} {INVERSE[match['relation']]} a {match['first']}"
    return [caption, mirrored, f"a picture of {caption}"]


def write_pairs(shapes: Path, out: Path, n_train: int | None = None) -> dict[str, int]:
    """`train.json` / `val.json` in `out`: `{image file: [3 captions]}` for the first `n_train` / all val images."""
    out.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for split, limit in (("train", n_train), ("val", None)):
        captions = json.loads((shapes / f"{split}.json").read_text())
        pairs = {name: paraphrases(text) for name, text in list(captions.items())[:limit]}
        (out / f"{split}.json").write_text(json.dumps(pairs, indent=1) + "\n")
        sizes[split] = len(pairs)
    return sizes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shapes", type=Path, help="the shapes captioning set (train.json, val.json, images/)")
    parser.add_argument("out", type=Path)
    parser.add_argument("--n-train", type=int, default=512)
    args = parser.parse_args(argv)
    print(write_pairs(args.shapes, args.out, args.n_train))


if __name__ == "__main__":
    main()
