"""What a run does with an output dir that already holds a run (`trainers.rerun`), on planted runs.

The previous run is planted on disk the way a run leaves it (recipe.json, complete checkpoints with
manifests and trainer state, metrics.jsonl, best/, training_summary.json), so each case costs no training.
`tests/test_rerun_end_to_end.py` does the same with real runs of `launch.py`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from conftest import tiny_recipe
from trainers.checkpoints import finalize_checkpoint, recipe_hash
from trainers.recipe.config import to_dict
from trainers.recipe.diff import Change, continuable, recipe_changes
from trainers.rerun import RerunRefused, RunAlreadyComplete, decide, resolved_recipe_dict
from trainers.run import prepare_output_dir, run_training, setup_run

STEPS_PER_EPOCH = 4  # tiny_recipe: 32 samples / batch 8


def plant_run(out: Path, recipe, steps=(4, 8), finished=True, world_size=1, early_stopped_at=None) -> Path:
    """A previous run of `recipe` in `out`, as a run writes it; `finished`: it wrote its summary."""
    out.mkdir(parents=True, exist_ok=True)
    saved = resolved_recipe_dict(recipe)
    (out / "recipe.json").write_text(json.dumps(saved, indent=2))
    max_steps = recipe.training.epochs * STEPS_PER_EPOCH
    for step in steps:
        tmp = out / "checkpoints" / f"tmp-checkpoint-{step}"
        tmp.mkdir(parents=True)
        (tmp / "model.safetensors").write_bytes(b"w" * step)
        (tmp / "trainer_state.json").write_text(json.dumps({"global_step": step, "max_steps": max_steps}))
        finalize_checkpoint(
            tmp,
            out / "checkpoints" / f"checkpoint-{step}",
            step,
            step / STEPS_PER_EPOCH,
            recipe_hash(to_dict(recipe)),
            world_size,
        )
    (out / "metrics.jsonl").write_text("".join(json.dumps({"step": s}) + "\n" for s in steps))
    if finished:
        (out / "best").mkdir()
        (out / "best" / "model.safetensors").write_bytes(b"best")
        (out / "training_summary.json").write_text(
            json.dumps(
                {
                    "global_steps": steps[-1],
                    "config": saved,
                    "best_metric": {"name": "loss", "value": 9.5},
                    "early_stopping": {"stopped_at_step": early_stopped_at} if early_stopped_at else None,
                }
            )
        )
    return out


def listing(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_changes_are_listed_as_dotted_keys_old_to_new():
    old = resolved_recipe_dict(tiny_recipe(Path("/o"), epochs=2))
    new_recipe = tiny_recipe(Path("/o"), epochs=1, batch_size=1)
    new_recipe.data.train = "/data/other.json"
    new_recipe.stages = []
    rendered = [c.render() for c in recipe_changes(old, resolved_recipe_dict(new_recipe))]
    assert "training.epochs: 2 -> 1" in rendered
    assert "training.batch_size: 8 -> 1" in rendered
    assert any(r.startswith("data.train: ") and r.endswith(' -> "/data/other.json"') for r in rendered)
    assert len(rendered) == 3


@pytest.mark.parametrize(
    ("key", "scheduler", "ok"),
    [
        ("training.save_steps", "linear", True),
        ("training.save_total_limit", "linear", True),
        ("training.logging_steps", "linear", True),
        ("training.num_workers", "linear", True),
        ("training.resume", "linear", True),
        ("output_dir", "linear", True),
        ("reporting.wandb", "linear", True),
        ("launch.master_port", "linear", True),
        ("slurm.time", "linear", True),
        # the LR schedule is built from the total number of steps: only total-independent ones may change length
        ("training.epochs", "linear", False),
        ("training.max_steps", "cosine", False),
        ("training.epochs", "constant", True),
        ("training.epochs", "constant_with_warmup", True),
        # regrouping the validation set changes the eval loss (measured 10.3543 vs 10.3531, batch 8 vs 3)
        ("training.eval_batch_size", "linear", False),
        ("evaluation.batch_size", "linear", False),
        ("training.batch_size", "constant", False),
        ("training.lr", "constant", False),
        ("training.seed", "constant", False),
        ("launch.zero", "constant", False),
        ("data.train", "constant", False),
        ("data.max_val_samples", "constant", False),
        ("model.id", "constant", False),
        ("evaluation.metrics", "constant", False),
        ("early_stopping.patience", "constant", False),
        ("stages.0.epoch", "constant", False),
        # memory and kernels only: the same loss and gradients (tests/test_gradient_checkpointing.py,
        # tests/test_attention.py), so a run that ran out of memory can continue with them
        ("training.gradient_checkpointing", "linear", True),
        ("model.attn_implementation", "linear", True),
        ("training.optim", "constant", False),
    ],
)
def test_which_keys_a_run_may_change_mid_way(key, scheduler, ok):
    assert continuable(Change(key, 1, 2), scheduler) is ok


def test_a_changed_recipe_stops_before_the_model_is_loaded_naming_keys_and_choices(tmp_path, monkeypatch):
    out = plant_run(tmp_path / "x", tiny_recipe(tmp_path / "x", epochs=2))
    before = listing(out)
    rerun = tiny_recipe(out, epochs=1, batch_size=1, resume="auto")
    rerun.data.train = str(tmp_path / "other.json")
    (tmp_path / "other.json").write_text("{}")

    def no_model(*_args, **_kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("trainers.run.load_model", no_model)
    with pytest.raises(RerunRefused) as info:
        setup_run(rerun)
    message = str(info.value)
    assert info.value.exit_code == 2 and "\n" not in message
    for fragment in (
        "training.epochs: 2 -> 1",
        "training.batch_size: 8 -> 1",
        f'-> "{tmp_path / "other.json"}"',
        "lr_scheduler=linear",
        "checkpoint-8",
        "another output dir",
        "training.resume=never",
        str(out / "previous-1"),
        "training.resume=force",
        "Nothing was trained",
    ):
        assert fragment in message, (fragment, message)
    assert listing(out) == before  # nothing moved, deleted or rewritten


def test_only_continuable_changes_continue_from_the_newest_checkpoint(tmp_path, caplog, monkeypatch):
    out = plant_run(tmp_path / "x", tiny_recipe(tmp_path / "x", epochs=2), finished=False)
    rerun = tiny_recipe(out, epochs=2, save_steps=2, logging_steps=2, num_workers=1, resume="auto")
    rerun.reporting.plots = True
    # a library imported earlier in the same test worker may have disabled existing loggers (dictConfig)
    monkeypatch.setattr(logging.getLogger("trainers.rerun"), "disabled", False)
    with caplog.at_level(logging.INFO, logger="trainers.rerun"):
        assert prepare_output_dir(rerun, out) == str(out / "checkpoints" / "checkpoint-8")
    assert "training.save_steps: null -> 2" in caplog.text


@pytest.mark.parametrize(("scheduler", "continues"), [("constant", True), ("linear", False)])
def test_more_epochs_continue_a_finished_run_only_with_a_total_independent_schedule(
    tmp_path, scheduler, continues
):
    out = plant_run(tmp_path / "x", tiny_recipe(tmp_path / "x", epochs=2, lr_scheduler=scheduler))
    longer = tiny_recipe(out, epochs=4, lr_scheduler=scheduler, resume="auto")
    if continues:
        assert prepare_output_dir(longer, out) == str(out / "checkpoints" / "checkpoint-8")
    else:
        with pytest.raises(RerunRefused, match=r"training.epochs: 2 -> 4 \(with lr_scheduler=linear"):
            prepare_output_dir(longer, out)


def test_eval_batch_size_is_not_continuable(tmp_path):
    out = plant_run(tmp_path / "x", tiny_recipe(tmp_path / "x", epochs=2), finished=False)
    with pytest.raises(RerunRefused, match=r"training.eval_batch_size: null -> 2"):
        prepare_output_dir(tiny_recipe(out, epochs=2, eval_batch_size=2, resume="auto"), out)


def test_force_continues_anyway_and_warns_with_the_changed_keys(tmp_path, caplog):
    out = plant_run(tmp_path / "x", tiny_recipe(tmp_path / "x", epochs=2), finished=False)
    forced = tiny_recipe(out, epochs=2, lr=5e-4, resume="force")
    with caplog.at_level(logging.WARNING):
        assert prepare_output_dir(forced, out) == str(out / "checkpoints" / "checkpoint-8")
    assert "training.resume=force" in caplog.text and "training.lr: 0.001 -> 0.0005" in caplog.text


def test_a_finished_run_rerun_with_the_same_recipe_is_already_complete(tmp_path, monkeypatch):
    recipe = tiny_recipe(tmp_path / "x", epochs=2, resume="auto")
    out = plant_run(tmp_path / "x", recipe)
    before = listing(out)
    monkeypatch.setattr("trainers.run.load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(RunAlreadyComplete, match="already complete"):
        prepare_output_dir(recipe, out)
    summary = run_training(tiny_recipe(out, epochs=2, resume="auto"))  # the library entry point returns it
    assert summary["global_steps"] == 8 and summary["best_metric"]["value"] == 9.5
    assert listing(out) == before


def test_an_early_stopped_run_is_complete_but_one_stopped_by_hand_continues(tmp_path):
    recipe = tiny_recipe(tmp_path / "a", epochs=4, resume="auto")
    stopped = plant_run(tmp_path / "a", recipe, steps=(4, 8), early_stopped_at=8)
    assert decide(recipe, stopped, world_size=1).action == "complete"
    by_hand = plant_run(tmp_path / "b", tiny_recipe(tmp_path / "b", epochs=4), steps=(4, 8))  # 8 of 16 steps
    assert decide(tiny_recipe(by_hand, epochs=4, resume="auto"), by_hand, world_size=1).resume_from.endswith(
        "checkpoint-8"
    )


def test_resume_never_keeps_the_previous_run_aside_instead_of_deleting_it(tmp_path, caplog):
    recipe = tiny_recipe(tmp_path / "x", epochs=2)  # resume="never"
    out = plant_run(tmp_path / "x", recipe)
    (out / "slurm").mkdir()
    (out / "slurm" / "slurm-7.out").write_text("the live job log stays\n")
    first = listing(out)
    with caplog.at_level(logging.WARNING):
        assert prepare_output_dir(recipe, out) is None
    assert caplog.text.count("moved to") == 1 and str(out / "previous-1") in caplog.text
    kept = listing(out / "previous-1")
    assert kept == {k: v for k, v in first.items() if not k.startswith("slurm/")}
    assert (out / "slurm" / "slurm-7.out").is_file() and not (out / "checkpoints").exists()
    # a second start over keeps both earlier runs
    plant_run(out, recipe, steps=(4,))
    prepare_output_dir(recipe, out)
    assert sorted(p.name for p in out.glob("previous-*")) == ["previous-1", "previous-2"]
    assert listing(out / "previous-1") == kept


def test_resume_overwrite_deletes_the_previous_run_so_reruns_do_not_pile_up(tmp_path):
    recipe = tiny_recipe(tmp_path / "x", epochs=2, resume="overwrite")
    out = tmp_path / "x"
    for _ in range(3):
        plant_run(out, recipe)
        assert prepare_output_dir(recipe, out) is None
        assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == []


def test_make_demo_starts_over_with_overwrite():
    """`make demo` is rerun as is: it must neither resume an old demo nor pile up previous-* copies."""
    from conftest import ROOT

    demo = [
        line
        for line in (ROOT / "Makefile").read_text().splitlines()
        if "launch.py" in line and "--demo" in line
    ]
    assert demo and all("training.resume=overwrite" in line for line in demo), demo


def test_a_requeued_slurm_job_always_continues_its_own_checkpoints(tmp_path, monkeypatch):
    """SLURM_RESTART_COUNT>=1: even with resume=never and a recipe edited since, nothing is moved or refused."""
    out = plant_run(tmp_path / "x", tiny_recipe(tmp_path / "x", epochs=2), finished=False)
    before = listing(out)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    for resume in ("never", "auto", "overwrite"):
        edited = tiny_recipe(out, epochs=2, lr=5e-4, resume=resume)
        assert prepare_output_dir(edited, out) == str(out / "checkpoints" / "checkpoint-8")
    assert listing(out) == before


def test_another_world_size_is_not_continued(tmp_path):
    out = plant_run(tmp_path / "x", tiny_recipe(tmp_path / "x", epochs=2), finished=False, world_size=2)
    with pytest.raises(RerunRefused, match=r"world size \(processes\): 2 -> 1"):
        prepare_output_dir(tiny_recipe(out, epochs=2, resume="auto"), out)


@pytest.mark.parametrize("resume", ["auto", "never", "overwrite", "force"])
def test_every_rank_reaches_the_same_decision_and_only_rank_0_touches_files(tmp_path, monkeypatch, resume):
    """Rank 1 decides before and after rank 0 acted (both orders happen): the same checkpoint, or the same error."""
    out = plant_run(tmp_path / "x", tiny_recipe(tmp_path / "x", epochs=2), finished=False)
    changed = tiny_recipe(out, epochs=2, lr=5e-4, resume=resume)

    def on_rank(rank: int):
        monkeypatch.setenv("RANK", str(rank))
        try:
            return prepare_output_dir(changed, out)
        except RerunRefused:
            return "refused"

    before = listing(out)
    early = on_rank(1)
    assert listing(out) == before  # rank 1 never moves or deletes
    main = on_rank(0)
    late = on_rank(1)
    assert early == main == late
    assert main == {"auto": "refused", "force": str(out / "checkpoints" / "checkpoint-8")}.get(resume)
    if resume == "never":
        assert (out / "previous-1" / "checkpoints" / "checkpoint-8").is_dir()
        assert not (out / "previous-2").exists()


def test_a_previous_attempt_without_checkpoints_starts_afresh(tmp_path):
    """Stopped before its first checkpoint (say, by a data error): nothing to continue or to keep."""
    out = plant_run(tmp_path / "x", tiny_recipe(tmp_path / "x", epochs=2), steps=(), finished=False)
    fixed = tiny_recipe(out, epochs=2, lr=5e-4, resume="auto")
    assert prepare_output_dir(fixed, out) is None
