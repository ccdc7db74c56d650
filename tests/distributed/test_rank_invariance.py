"""2 real ranks on CPU (gloo) under torchrun and accelerate: DDP, ZeRO-1/2/3 (+offload), against one process.

One 1-process reference run and one 2-rank job per launcher, shared with the other distributed suites
(tests/distributed/jobs.py); each job runs several modes back to back (tests/distributed/worker.py) and dumps
per-rank facts. The global batch is 8 in every run (1 x 8 or
2 x 4), dropout is 0, and the 32 training captions all have the same token count, so the per-rank mean
losses average to exactly the global mean: a 2-rank run must then reproduce the 1-process run up to
floating-point summation order.

Tolerances (the README's): per-step loss LOSS_TOL absolute, weights after every epoch WEIGHT_TOL absolute max
over all parameters, grad norm GRAD_NORM_TOL relative. Measured here: loss 9.5e-7 (DDP) / 1.9e-6 (ZeRO-1/2/3,
offload: 1 and 2 float32 ulps at a loss of ~10), weights 3.0e-7 / up to 2.6e-6, grad norm 1.6e-7 / 6.6e-5.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from jobs import (
    ACCUM_MODES,
    EPOCHS,
    GLOBAL_BATCH,
    PLATEAU_MODES,
    RESUME_LOGGING_STEPS,
    RESUME_MODE,
    SAMPLES,
    STEPS_PER_EPOCH,
    TORCHRUN_MODES,
    VAL_SAMPLES,
    WORLD,
    facts,
)
from safetensors.torch import load_file

# The module's runs are in the shared jobs (tests/distributed/jobs.py), which start with the first test.
pytestmark = [pytest.mark.distributed, pytest.mark.timeout(2400)]

LOSS_TOL = 5e-6
WEIGHT_TOL = 5e-6
GRAD_NORM_TOL = 1e-4
RUNS = [("torchrun", m) for m in (*TORCHRUN_MODES, *ACCUM_MODES)] + [("accelerate", "ddp")]


@pytest.fixture(scope="module")
def reference(shared_jobs) -> dict:
    """One process, batch 8, no process group."""
    return facts(shared_jobs.one_process, "ddp", 1)[0] | {"dir": str(shared_jobs.one_process / "ddp")}


@pytest.fixture(scope="module")
def torchrun_job(shared_jobs) -> Path:
    """torchrun, 2 ranks: DDP, ZeRO-1/2/3, ZeRO-2/3 with CPU offload, accumulation, an interrupted+resumed ZeRO-3.
    The first DeepSpeed mode JIT-builds DeepSpeed's shm comm op into TORCH_EXTENSIONS_DIR (once per clone)."""
    return shared_jobs.torchrun


@pytest.fixture
def ranks(request, shared_jobs) -> list[dict]:
    launcher, mode = request.param
    job = shared_jobs.torchrun if launcher == "torchrun" else shared_jobs.accelerate
    return [f | {"dir": str(job / mode)} for f in facts(job, mode, WORLD)]


def by_id(run) -> str:
    return f"{run[0]}-{run[1]}"


@pytest.mark.parametrize("ranks", RUNS, indirect=True, ids=by_id)
def test_each_rank_iterates_its_own_disjoint_shard(ranks):
    mode = ranks[0]["mode"]
    accum = 2 if mode.endswith("+accum2") else 1
    for r, f in enumerate(ranks):
        assert (f["rank"], f["world_size"], f["trainer_world_size"], f["process_index"]) == (
            r,
            WORLD,
            WORLD,
            r,
        )
        assert f["deepspeed"] == (not mode.startswith("ddp"))
        assert f["rank_facts"]["zero_stage"] == (None if mode.startswith("ddp") else int(mode[4]))
        # steps per epoch = N / (world x batch x accum): batches per epoch / accum
        assert f["rank_facts"]["batch_size"] == GLOBAL_BATCH // (WORLD * accum)
        assert f["rank_facts"]["batches_per_epoch"] == STEPS_PER_EPOCH * accum
        assert f["stages_opened_at_step"]["0"] == STEPS_PER_EPOCH  # optimizer steps in epoch 0
        assert f["global_step"] == ranks[0]["global_step"]
    for epoch, (seen0, seen1) in enumerate(
        zip(ranks[0]["indices_per_epoch"], ranks[1]["indices_per_epoch"], strict=True)
    ):
        assert len(seen0) == len(seen1) == SAMPLES // WORLD, epoch
        assert not set(seen0) & set(seen1), f"epoch {epoch}: ranks saw the same samples"
        assert sorted(seen0 + seen1) == list(range(SAMPLES)), epoch


@pytest.mark.parametrize("ranks", RUNS, indirect=True, ids=by_id)
def test_two_ranks_reproduce_one_process(ranks, reference):
    f = ranks[0]
    assert f["losses"].keys() == reference["losses"].keys()
    loss_diff = max(abs(f["losses"][s] - reference["losses"][s]) for s in reference["losses"])
    assert loss_diff <= LOSS_TOL, f"loss curves differ by {loss_diff}"
    for s, norm in reference["grad_norms"].items():
        assert f["grad_norms"][s] == pytest.approx(norm, rel=GRAD_NORM_TOL), s
    assert len(f["epoch_hashes"]) == len(reference["epoch_hashes"])
    worst = 0.0
    for epoch in range(len(reference["epoch_hashes"])):
        mine = load_file(str(Path(f["dir"]) / f"epoch{epoch}.safetensors"))
        ref = load_file(str(Path(reference["dir"]) / f"epoch{epoch}.safetensors"))
        assert mine.keys() == ref.keys()
        worst = max(worst, max((mine[n] - ref[n]).abs().max().item() for n in ref))
    assert worst <= WEIGHT_TOL, f"weights differ from the 1-process run by {worst}"
    print(f"{f['mode']}: max |loss diff| {loss_diff:.2e}, max |weight diff| {worst:.2e}")


@pytest.mark.parametrize("ranks", RUNS, indirect=True, ids=by_id)
def test_zero3_loads_the_model_partitioned_and_counts_like_one_process(ranks, reference):
    """Under ZeRO-3 the model is created partitioned (inside zero.Init: each rank holds about half of it right
    after loading, not the whole); the freeze report's counts read the full sizes (ds_numel) and equal the
    1-process counts. Other modes load the whole model on every rank."""
    counts = ("total", "trainable_at_start", "trainable_at_end", "scheduled_by_stages")
    total = reference["params"]["total"]
    assert reference["held_at_load"] == total and not reference["partitioned_at_load"]
    zero3 = ranks[0]["rank_facts"]["zero_stage"] == 3
    for f in ranks:
        assert {k: f["params"][k] for k in counts} == {k: reference["params"][k] for k in counts}
        assert f["partitioned_at_load"] == zero3
        if zero3:  # each parameter split in WORLD shards, padded by at most WORLD - 1 elements
            assert total / WORLD <= f["held_at_load"] <= total / WORLD + f["param_tensors"], f["held_at_load"]
        else:
            assert f["held_at_load"] == total


@pytest.mark.parametrize("ranks", RUNS, indirect=True, ids=by_id)
def test_ranks_hold_bit_identical_weights(ranks):
    assert ranks[0]["start_hash"] == ranks[1]["start_hash"]
    assert ranks[0]["epoch_hashes"] == ranks[1]["epoch_hashes"]
    assert ranks[0]["final_hash"] == ranks[1]["final_hash"]


@pytest.mark.parametrize("ranks", RUNS, indirect=True, ids=by_id)
def test_frozen_parameters_stay_bit_identical_on_every_rank(ranks, reference):
    for f in ranks:
        assert f["frozen_tensors"] == reference["frozen_tensors"] > 0
        assert f["frozen_changed"] == []


@pytest.mark.parametrize("ranks", RUNS, indirect=True, ids=by_id)
def test_param_group_lrs_are_as_declared(ranks, reference):
    declared = reference["declared_lrs"]
    assert declared["vision/decay"] == pytest.approx(0.1 * declared["text/decay"])
    assert declared["vision/stage1/decay"] == pytest.approx(
        0.5 * declared["text/decay"]
    )  # the stage's lr_mult
    for f in ranks:
        assert f["declared_lrs"] == declared
        assert f["rank_facts"]["group_lrs_at_start"] == pytest.approx(declared)
        assert f["lrs_by_step"].keys() == reference["lrs_by_step"].keys()
        for step, lrs in reference["lrs_by_step"].items():  # same schedule, every group, every step
            assert f["lrs_by_step"][step] == pytest.approx(lrs), step


@pytest.mark.parametrize("ranks", RUNS, indirect=True, ids=by_id)
def test_unfreezing_stages_take_effect_on_every_rank(ranks):
    for f in ranks:
        assert f["stages_opened_at_step"] == {"0": STEPS_PER_EPOCH, "1": 2 * STEPS_PER_EPOCH}
        # the gated parameters first change in their stage's epoch: not before (gate), not never (wrap)
        assert f["stage_first_change_epoch"] == f["stage_epochs"] == {"0": 1, "1": 2}
        # the stage groups' Adam state was found and reset on this rank (ZeRO: the flat fp32 partitions)
        assert f["stage_state_entries_reset"].keys() == {"0", "1"}
        assert all(n > 0 for n in f["stage_state_entries_reset"].values()), f["stage_state_entries_reset"]


CAPTION_SCORES = ("eval_meteor", "eval_rouge_l", "eval_cider_d", "eval_val_score")


@pytest.mark.parametrize("ranks", RUNS, indirect=True, ids=by_id)
def test_sharded_evaluation_scores_like_one_process(ranks, reference):
    evaluations = len(reference["eval"])
    assert reference["scored_indices"] == [list(range(VAL_SAMPLES))] * evaluations
    for f in ranks:
        # rank 0 scores the gathered captions once per evaluation, every image once; the others only receive
        assert f["scored_indices"] == ([list(range(VAL_SAMPLES))] * evaluations if f["rank"] == 0 else [])
        for key in CAPTION_SCORES:  # the same numbers, bit for bit, on every rank (broadcast from rank 0)
            assert [e[key] for e in f["eval"]] == [e[key] for e in reference["eval"]], key
        assert [e["eval_loss"] for e in f["eval"]] == pytest.approx(
            [e["eval_loss"] for e in reference["eval"]], abs=LOSS_TOL
        )
        assert f["predictions"] == reference["predictions"]
        assert len(f["predictions"]) == VAL_SAMPLES


@pytest.mark.parametrize("ranks", RUNS, indirect=True, ids=by_id)
def test_early_stopping_on_caption_scores_stops_every_rank_at_the_same_step(ranks, reference):
    # mean(meteor, rouge_l, cider_d) computed on rank 0 and broadcast decides; the 1-process run really
    # stops early (PATIENCE evaluations without a better score), and so does every rank, at its step
    expected = reference["early_stopping"]["stopped_at_step"]
    assert reference["early_stopping"]["metric"] == "eval_val_score"
    assert expected is not None and expected < EPOCHS * STEPS_PER_EPOCH
    assert reference["global_step"] == expected
    for f in ranks:
        assert f["early_stopping"] == reference["early_stopping"]
        assert f["global_step"] == expected


@pytest.mark.parametrize("ranks", RUNS, indirect=True, ids=by_id)
def test_best_checkpoint_is_saved_whole_and_loaded_back(ranks, reference):
    main = ranks[0]
    assert main["best_checkpoint"].endswith(Path(reference["best_checkpoint"]).name)
    assert main["best_epoch"] == reference["best_epoch"]
    assert main["best_loaded_is_best_epoch"]  # load_best_model_at_end restored the best epoch's weights
    assert main["best_saved_matches_final"]  # best/model.safetensors holds them (ZeRO-3: gathered)
    assert main["best_saved_missing"] == []  # every tensor, frozen ones included
    assert "best_saved_tensors" not in ranks[1]  # only rank 0 writes


def untimed(record: dict) -> dict:
    return {k: v for k, v in record.items() if "runtime" not in k and "per_second" not in k}


def test_zero3_resume_continues_exactly(torchrun_job):
    """Bit for bit: every grad norm and score, and the full weights after every epoch. The resumed run logs
    every 3 steps and resumes from checkpoint-8, inside the window 7..9: each logged loss, that window's
    included, is the mean of the uninterrupted run's per-step losses over its window (the Trainer sums in
    float32 before dividing: within 1e-6 relative); before the window travelled with the checkpoint, the
    step-9 line averaged step 9 alone."""
    whole = facts(torchrun_job, "zero3", WORLD)
    resumed = facts(torchrun_job, RESUME_MODE, WORLD)
    n = RESUME_LOGGING_STEPS
    for r in range(WORLD):
        assert Path(resumed[r]["resumed_from"]).name == f"checkpoint-{2 * STEPS_PER_EPOCH}"
        assert (2 * STEPS_PER_EPOCH) % n != 0  # the resume step lies inside a logging window
        per_step = {int(k): v for k, v in whole[r]["losses"].items()}
        logged = {int(k): v for k, v in resumed[r]["losses"].items()}
        assert sorted(logged) == [s for s in sorted(per_step) if s % n == 0]
        for step, loss in logged.items():
            window = sum(per_step[s] for s in range(step - n + 1, step + 1)) / n
            assert loss == pytest.approx(window, rel=1e-6), step
        assert resumed[r]["grad_norms"] == {
            k: v for k, v in whole[r]["grad_norms"].items() if int(k) % n == 0
        }
        assert [untimed(e) for e in resumed[r]["eval"]] == [untimed(e) for e in whole[r]["eval"]]
        assert resumed[r]["stages_opened_at_step"] == whole[r]["stages_opened_at_step"]
        assert resumed[r]["early_stopping"] == whole[r]["early_stopping"]
        assert resumed[r]["epoch_hashes"] == whole[r]["epoch_hashes"]
        assert resumed[r]["final_hash"] == whole[r]["final_hash"]
    for epoch in range(len(whole[0]["epoch_hashes"])):
        a = load_file(str(torchrun_job / "zero3" / f"epoch{epoch}.safetensors"))
        b = load_file(str(torchrun_job / RESUME_MODE / f"epoch{epoch}.safetensors"))
        assert a.keys() == b.keys()
        assert all(torch.equal(a[n], b[n]) for n in a), epoch


def test_zero3_best_model_reloads_into_a_plain_model(torchrun_job):
    from transformers import BlipForConditionalGeneration

    best = torchrun_job / "zero3" / "best"
    model = BlipForConditionalGeneration.from_pretrained(str(best))
    expected = load_file(str(best / "model.safetensors"))
    for name, param in model.named_parameters():
        if name in expected:
            assert torch.equal(param.detach(), expected[name]), name


PLATEAU_RUNS = [("torchrun", m) for m in PLATEAU_MODES]
PLATEAU_WEIGHT_TOL = 1e-6


@pytest.fixture(scope="module")
def plateau_reference(shared_jobs) -> dict:
    """One process with the plateau stage (worker.py `+plateau`)."""
    run = shared_jobs.one_process / "ddp+plateau"
    return facts(shared_jobs.one_process, "ddp+plateau", 1)[0] | {"dir": str(run)}


@pytest.mark.parametrize("ranks", PLATEAU_RUNS, indirect=True, ids=by_id)
def test_a_plateau_stage_opens_at_the_same_step_on_two_ranks_as_on_one(ranks, plateau_reference):
    """Every rank takes the plateau decision from the broadcast score: the stage opens at the second evaluation
    (step 8) on each rank as in the 1-process run, re-warms its LR alike, the run stops at the same evaluation,
    and the weights after every epoch match the 1-process run within PLATEAU_WEIGHT_TOL."""
    ref = plateau_reference
    opened = {"0": STEPS_PER_EPOCH, "1": 2 * STEPS_PER_EPOCH}
    assert ref["stages_opened_at_step"] == opened
    assert ref["early_stopping"]["stopped_at_step"] == 4 * STEPS_PER_EPOCH  # 2 evaluations after the opening
    assert ref["stage_first_change_epoch"]["1"] == 2  # closed through step 8, trains in epoch 2
    stage_groups = ref["stage_group_names"]["1"]
    for f in ranks:
        assert f["stages_opened_at_step"] == opened
        assert f["early_stopping"] == ref["early_stopping"]
        assert f["global_step"] == ref["global_step"]
        assert f["stage_first_change_epoch"] == ref["stage_first_change_epoch"]
        for step in (8, 9, 10, 11):  # the LR each rank set for the next step
            for name in stage_groups:
                assert f["lrs_by_step"][str(step)][name] == pytest.approx(
                    ref["lrs_by_step"][str(step)][name], rel=1e-12
                ), (step, name)
    # the re-warm-up over the scheduler: half the rate for step 10, the full rate from step 11 (step 9 ran at 0)
    other = next(n for n in ref["declared_lrs"] if all(n not in g for g in ref["stage_group_names"].values()))

    def ramp(step: int) -> float:
        lrs, declared = ref["lrs_by_step"][str(step)], ref["declared_lrs"]
        return (lrs[stage_groups[0]] / declared[stage_groups[0]]) / (lrs[other] / declared[other])

    assert [ramp(s) for s in (9, 10, 11)] == pytest.approx([0.5, 1.0, 1.0], rel=1e-9)
    worst = 0.0
    for epoch in range(len(ref["epoch_hashes"])):
        mine = load_file(str(Path(ranks[0]["dir"]) / f"epoch{epoch}.safetensors"))
        theirs = load_file(str(Path(ref["dir"]) / f"epoch{epoch}.safetensors"))
        worst = max(worst, max((mine[n] - theirs[n]).abs().max().item() for n in theirs))
    print(f"{ranks[0]['mode']}: max |weight diff| vs 1 process {worst:.2e}")
    assert worst <= PLATEAU_WEIGHT_TOL, f"weights differ from the 1-process run by {worst}"
