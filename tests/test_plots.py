"""`val_metrics.png` as small multiples: each metric on an axis of its own scale, the headline first with its
baseline and best epoch, read back from the written figure."""

from __future__ import annotations

import json

from PIL import Image

from trainers.reporting.plots import plot_eval_metrics, read_panels


def _metrics_log(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def florence_like(tmp_path):
    """The shape that hid map_50: a headline of 0-0.2 beside CIDEr-D up to 5 and per-class APs."""
    rows = []
    for epoch in range(1, 6):
        rows.append(
            {
                "epoch": float(epoch),
                "step": 10 * epoch,
                "train_loss": 2.0 / epoch,
                "eval": {
                    "loss": 1.5 / epoch,
                    "map_50": 0.04 * epoch,
                    "grounding_recall": 0.05 * epoch,
                    "cider_d": 1.0 * epoch,
                    "mean_pixel_error": 40.0 / epoch,
                    "AP/drop": 0.01 * epoch,
                    "runtime": 3.0,
                },
                "baseline": {"map_50": 0.002, "cider_d": 0.4},
            }
        )
    return _metrics_log(tmp_path / "metrics.jsonl", rows)


def test_the_headline_metric_has_a_panel_of_its_own_first_with_its_baseline(tmp_path):
    out = tmp_path / "val_metrics.png"
    drawn = plot_eval_metrics(
        florence_like(tmp_path), out, headline="eval_map_50", best_epoch=5.0, stage_steps=[20]
    )
    panels = read_panels(out)
    assert panels == [{"title": p.title, "series": p.series, "baseline": p.baseline} for p in drawn]
    assert panels[0] == {"title": "map_50 (headline)", "series": ["map_50"], "baseline": {"map_50": 0.002}}
    by_series = {name: p["title"] for p in panels for name in p["series"]}
    # no metric shares an axis with one of another scale: CIDEr-D (up to 5) and the pixel error (up to 40)
    # each sit apart from the fractions
    assert by_series["grounding_recall"] == "fractions (0-1)"
    assert len({by_series["cider_d"], by_series["mean_pixel_error"], by_series["grounding_recall"]}) == 3
    assert by_series["AP/drop"] == "per label"
    assert panels[-1]["series"] == ["val loss", "train loss (epoch mean)"]
    assert "runtime" not in by_series
    with Image.open(out) as image:
        assert image.width >= 1000  # two columns, the headline across both


def test_without_a_headline_the_metrics_still_split_by_scale(tmp_path):
    out = tmp_path / "val_metrics.png"
    plot_eval_metrics(florence_like(tmp_path), out)
    titles = [p["title"] for p in read_panels(out)]
    assert not any(t.endswith("(headline)") for t in titles)
    assert titles[0] == "fractions (0-1)"
