"""W&B wiring: offline unless the user is logged in and the server answers, files under the run's output dir,
one run per training.

The Trainer's own `WandbCallback` (`report_to=["wandb"]`) starts the run on global rank 0 only and logs the
Trainer's metrics on `train/global_step`. This module sets its environment (mode, project, group, job type,
tags, the run id kept in the output dir for resume) and adds, in `WandbRunExtras`, what the integration does
not log: the resolved recipe, every param group's LR, the freeze map, when each stage opened, resources per
epoch, and a prediction table per evaluation (rows from the task's `table_rows` hook).
"""

from __future__ import annotations

import logging
import os
import secrets
import string
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from trainers.recipe.config import Reporting
from trainers.reporting.redact import redact

logger = logging.getLogger(__name__)

STEP = "train/global_step"  # the Trainer integration's x axis (`define_metric("*", step_metric=STEP)`)


def active_wandb() -> Any | None:
    """The `wandb` module while this process has a run, else None, without importing it.

    A run exists only once something imported wandb (the Trainer's `WandbCallback` does, when reporting is on),
    so a process with W&B off never pays its import (~2-3 s of CPU).
    """
    wandb = sys.modules.get("wandb")
    return wandb if wandb is not None and getattr(wandb, "run", None) is not None else None


def logged_in() -> bool:
    """Whether W&B has an API key for its host (environment or .netrc), without asking the network."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        from wandb.sdk.lib.wbauth import read_netrc_auth

        return bool(read_netrc_auth(host=os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")))
    except Exception:  # an unreadable or malformed .netrc: not logged in, stay offline
        return False


PROBE_TIMEOUT_S = 10.0  # how long an online run waits for the W&B server before logging offline


def wandb_base_url() -> str:
    return os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").rstrip("/")


def server_unreachable(timeout: float = PROBE_TIMEOUT_S) -> str:
    """Why the W&B server cannot be reached within `timeout` seconds ("" when it answers).

    Any HTTP answer counts as reachable (proxy settings of the environment apply, as they do for W&B). A
    cluster node with an API key and no route out would otherwise wait ~2 minutes in `wandb.init` and then
    stop the run with `CommError`. The request runs in a thread, so a name lookup that hangs is cut off too.
    """
    import threading
    import urllib.error
    import urllib.request

    outcome: list[str] = []

    def probe() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(wandb_base_url(), method="HEAD"), timeout=timeout)
            outcome.append("")
        except urllib.error.HTTPError:  # an answer: the server is there
            outcome.append("")
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            outcome.append(f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__)

    thread = threading.Thread(target=probe, name="wandb-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return outcome[0] if outcome else f"no answer in {timeout:g} s"


def run_grouping(
    reporting: Reporting, recipe_name: str, launcher: str, zero: int | None, env: dict[str, str] | None = None
) -> tuple[str, str, list[str]]:
    """(group, job type, tags). The tasks of one Slurm array (a sweep) share `SLURM_ARRAY_JOB_ID` as group."""
    env = dict(os.environ) if env is None else env
    array = env.get("SLURM_ARRAY_JOB_ID")
    group = reporting.wandb_group or (f"slurm-array-{array}" if array else recipe_name)
    if launcher == "none" and env.get("SLURM_JOB_ID"):  # inside a job `--launcher slurm` submitted
        launcher = "slurm"
    tags = [*reporting.wandb_tags, f"launcher:{launcher}", f"zero:{zero}" if zero else "ddp"]
    if env.get("SLURM_JOB_ID"):
        tags.append(f"slurm:{env['SLURM_JOB_ID']}")
    if array and env.get("SLURM_ARRAY_TASK_ID"):
        tags.append(f"array-task:{env['SLURM_ARRAY_TASK_ID']}")
    return group, reporting.wandb_job_type, list(dict.fromkeys(tags))


def configure_wandb(
    reporting: Reporting,
    output_dir: Path,
    recipe_name: str = "run",
    launcher: str = "none",
    zero: int | None = None,
) -> list[str]:
    """Set W&B's environment and return the Trainer's `report_to` list (environment set by the user wins)."""
    new_session()
    if not os.environ.get(
        "WANDB_MODE", "x"
    ).strip():  # `WANDB_MODE=` (empty): unset, not a pydantic traceback
        del os.environ["WANDB_MODE"]
    if not reporting.wandb or reporting.wandb_mode == "disabled":
        os.environ["WANDB_MODE"] = "disabled"
        return []
    mode = reporting.wandb_mode
    if mode == "auto":
        mode = "online" if logged_in() else "offline"
    group, job_type, tags = run_grouping(reporting, recipe_name, launcher, zero)
    os.environ.setdefault("WANDB_MODE", mode)
    if os.environ["WANDB_MODE"] == "online" and int(os.environ.get("RANK", "0")) == 0:
        unreachable = server_unreachable()  # rank 0 starts the run: an unreachable server would stall it
        if unreachable:
            os.environ["WANDB_MODE"] = "offline"
            logger.warning(
                "W&B: %s cannot be reached (%s; waited at most %g s); logging offline instead, to %s (upload later with "
                "`wandb sync %s/offline-run-*`).",
                wandb_base_url(),
                unreachable,
                PROBE_TIMEOUT_S,
                output_dir.resolve() / "wandb",
                output_dir.resolve() / "wandb",
            )
    os.environ.setdefault("WANDB_PROJECT", reporting.wandb_project)
    os.environ.setdefault("WANDB_RUN_GROUP", group)
    os.environ.setdefault("WANDB_JOB_TYPE", job_type)
    os.environ.setdefault("WANDB_TAGS", ",".join(tags))
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_DISABLE_GIT", "true")
    output_dir.mkdir(parents=True, exist_ok=True)
    os.environ["WANDB_DIR"] = str(output_dir.resolve())
    # offline media (table images) are staged in W&B's data dir until `wandb sync`: keep them with the run
    os.environ.setdefault("WANDB_DATA_DIR", str((output_dir / "wandb" / "data").resolve()))
    return ["wandb"]


def new_session() -> None:
    """Let the next `wandb.init` of this process read the environment again (a second run in one process).

    W&B reads its environment once per process, at its first `wandb.init`, and afterwards ignores changes to
    it: the second variant of an `--ablate` run would log into the first one's run id and folder. Closing
    W&B's session (`wandb.teardown`) after one run makes the next one start its own. Not imported here when
    nothing imported it yet.
    """
    wandb = sys.modules.get("wandb")
    if wandb is None:
        return
    if getattr(wandb, "run", None) is not None:
        wandb.finish()
    wandb.teardown()


WANDB_RUN_ID_FILE = "wandb_run_id"


def persist_wandb_run_id(output_dir: Path, resuming: bool) -> str:
    """Keep one W&B run per output dir across restarts (a requeued Slurm job continues the same run).

    A resumed run reuses the id stored in the output dir (`resume="allow"`); a fresh start gets a new id.
    """
    path = output_dir / WANDB_RUN_ID_FILE
    run_id = path.read_text().strip() if resuming and path.is_file() else ""
    if not run_id:
        run_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
        path.write_text(run_id + "\n")
    os.environ["WANDB_RUN_ID"] = run_id
    os.environ["WANDB_RESUME"] = "allow"
    return run_id


def log(values: dict[str, Any], step: int) -> None:
    """`wandb.log` on the Trainer's step axis, when this process has a run (rank 0); otherwise nothing."""
    wandb = active_wandb()
    if wandb is not None:
        wandb.log({**values, STEP: step})


def prediction_table(rows: Sequence[Any]) -> Any:
    """A `wandb.Table` (image, prediction, target, then the rows' `extra` columns) from the task's `TableRow`s;
    boxes go onto the image."""
    import wandb

    labels = sorted({b[4] for r in rows for b in (*r.predicted_boxes, *r.true_boxes)})
    ids = {name: i for i, name in enumerate(labels)}

    def boxes(items: Sequence[tuple]) -> dict[str, Any]:
        return {
            "box_data": [
                {
                    "position": {"minX": x0, "minY": y0, "maxX": x1, "maxY": y1},
                    "domain": "pixel",
                    "class_id": ids[name],
                    "box_caption": name,
                }
                for x0, y0, x1, y1, name in items
            ],
            "class_labels": {i: name for name, i in ids.items()},
        }

    extra = list(dict.fromkeys(name for r in rows for name in r.extra))
    table = wandb.Table(columns=["image", "prediction", "target", *extra])
    for r in rows:
        drawn = (
            {"predictions": boxes(r.predicted_boxes), "ground_truth": boxes(r.true_boxes)} if labels else None
        )
        cells = [r.extra.get(name) for name in extra]
        cells = [wandb.Image(c) if hasattr(c, "getpixel") else c for c in cells]  # a PIL image
        table.add_data(wandb.Image(r.image, boxes=drawn), r.prediction, r.target, *cells)
    return table


class WandbRunExtras(TrainerCallback):
    """What the Trainer's `WandbCallback` does not log, on its step axis, from global rank 0 only.

    At train start: the resolved recipe and plan (secrets redacted) into the run config, the trainable ratio
    into the summary and the freeze map as a table; every logging step: each param group's LR
    (`lr/<group>`); the step each stage opened (`stages/opened`); after each evaluation: the task's
    prediction table (`predictions/<set>`).
    """

    def __init__(
        self,
        config: dict[str, Any],
        freeze: Any,
        opened_at_step: Callable[[], dict[int, int]],
        evaluators: Sequence[Any] = (),
    ) -> None:
        self.config, self.freeze, self.opened_at_step = config, freeze, opened_at_step
        self.evaluators = list(evaluators)
        self._stages_logged: set[int] = set()

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        import wandb

        if wandb.run is None:
            return
        wandb.config.update(redact(self.config), allow_val_change=True)
        f = self.freeze
        wandb.run.summary.update(
            {
                "params/total": f.total,
                "params/trainable": f.trainable,
                "params/trainable_ratio": f.trainable_ratio,
                "params/scheduled": f.scheduled,
            }
        )
        table = wandb.Table(
            columns=["module", "total", "trainable", "scheduled", "frozen", "trainable_ratio"]
        )
        for m in f.modules:
            table.add_data(
                m.module,
                m.total,
                m.trainable,
                m.scheduled,
                m.total - m.trainable - m.scheduled,
                m.trainable / m.total if m.total else 0.0,
            )
        log({"freeze_map": table, "params/trainable_ratio": f.trainable_ratio}, state.global_step)
        self._stages_logged = set(
            self.opened_at_step()
        )  # opened before a resume: logged by the first attempt

    def on_log(self, args, state, control, logs=None, optimizer=None, **kwargs):
        if not state.is_world_process_zero or optimizer is None or "loss" not in (logs or {}):
            return
        log(
            {f"lr/{g.get('name', i)}": g["lr"] for i, g in enumerate(optimizer.param_groups)},
            state.global_step,
        )

    def on_step_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        for stage, step in self.opened_at_step().items():
            if stage not in self._stages_logged:
                self._stages_logged.add(stage)
                log({"stages/opened": stage, f"stages/stage_{stage}_opened_at_step": step}, step)

    def on_evaluate(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        for evaluator in self.evaluators:
            rows = evaluator.task.table_rows(evaluator.last_predictions, evaluator.dataset)
            if rows:
                name = evaluator.prefix.rstrip("_") or "val"
                log({f"predictions/{name}": prediction_table(rows)}, state.global_step)


def finish_run(summary: dict[str, Any]) -> None:
    """Rank 0, after the summary is written: its resource totals and best metric into the W&B run summary,
    then close the run (so a second training in the same process starts its own, or resumes this one)."""
    wandb = active_wandb()
    if wandb is None:
        return
    resources = summary.get("resources") or {}
    peak = resources.get("peak_memory") or {}
    wandb.run.summary.update(
        redact(
            {
                "resources/peak_memory_bytes": peak.get("bytes"),
                "resources/peak_memory_device": peak.get("device"),
                "resources/train_seconds": resources.get("train_seconds"),
                "resources/eval_seconds": resources.get("eval_seconds"),
                "resources/samples_per_second": resources.get("samples_per_second"),
                "resources/tokens_per_second": resources.get("tokens_per_second"),
                "best_metric": summary.get("best_metric"),
                "stages_opened_at_step": summary.get("stages_opened_at_step"),
            }
        )
    )
    wandb.finish()
