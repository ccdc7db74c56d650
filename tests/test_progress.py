"""Progress bars: rank 0 only, only where stderr is a terminal, off with `launch.py --quiet` (TRAINERS_QUIET,
inherited by every worker a launcher starts)."""

from __future__ import annotations

import os

from conftest import ROOT, tiny_recipe
from trainers.reporting.progress import QUIET_ENV, progress_enabled


def test_progress_only_on_rank_0_in_a_terminal_and_not_quiet(monkeypatch):
    monkeypatch.setattr(os, "isatty", lambda fd: True)
    monkeypatch.delenv(QUIET_ENV, raising=False)
    assert progress_enabled(0) and not progress_enabled(1)
    monkeypatch.setenv(QUIET_ENV, "1")
    assert not progress_enabled(0)
    monkeypatch.delenv(QUIET_ENV)
    monkeypatch.setattr(os, "isatty", lambda fd: False)
    assert not progress_enabled(0)


def test_the_evaluation_shows_a_bar_in_a_terminal_and_none_when_quiet(tmp_path, monkeypatch, capsys):
    from trainers.run import setup_run

    monkeypatch.delenv(QUIET_ENV, raising=False)
    ctx = setup_run(tiny_recipe(tmp_path / "run", epochs=1))
    monkeypatch.setattr(os, "isatty", lambda fd: True)
    capsys.readouterr()
    ctx.trainer.evaluator.run(ctx.trainer.model)
    assert "evaluating val" in capsys.readouterr().err
    ctx.trainer.evaluator.predict_shard(ctx.trainer.model, 1, 2, "cpu")  # rank 1 predicts its shard: no bar
    assert "evaluating val" not in capsys.readouterr().err
    monkeypatch.setenv(QUIET_ENV, "1")
    ctx.trainer.evaluator.run(ctx.trainer.model)
    assert "evaluating val" not in capsys.readouterr().err


def test_launch_quiet_sets_the_switch_the_workers_inherit(monkeypatch):
    import launch

    monkeypatch.setenv(QUIET_ENV, "0")  # recorded, so the test's "1" is undone afterwards
    monkeypatch.chdir(ROOT)
    assert launch.main(["recipes/vit_lora.py", "--demo", "--quiet", "--dry-run"]) == 0
    assert os.environ[QUIET_ENV] == "1"
