"""`--launcher slurm`: render an sbatch script into the run dir and submit it.

The script is `#SBATCH` headers from the recipe's `slurm` settings, the job's arguments, and the body of
`slurm/multi_node.sbatch` (one torchrun per node through srun, USR1 forwarded to the trainers, payload
in the background so the trap runs). With `--sweep` it is a job array: task i runs variant i.
Nothing here imports training code.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from trainers.errors import UserFacingError
from trainers.paths import SLURM_DIR
from trainers.recipe.config import Recipe

BODY_MARKER = "# ---- launcher body"
TEMPLATE = SLURM_DIR / "multi_node.sbatch"


class SlurmError(UserFacingError):
    """Slurm is missing, the partition is unknown, or sbatch rejected the job."""


@dataclass
class SlurmJob:
    """A rendered batch job: where its script and logs go, and the argument lists of its variants."""

    run_dir: Path
    script_path: Path
    script: str
    log_pattern: str
    variants: list[list[str]] = field(default_factory=list)

    @property
    def is_array(self) -> bool:
        return len(self.variants) > 1

    def log_path(self, job_id: str) -> str:
        if self.is_array:
            return self.log_pattern.replace("%A", job_id).replace("%a", "<task>")
        return self.log_pattern.replace("%j", job_id)


def processes_per_node(recipe: Recipe) -> int:
    """One process per GPU; a CPU-only job (gpus_per_node=0) runs `launch.nproc` processes per node."""
    return recipe.slurm.gpus_per_node or recipe.launch.nproc


def job_arguments(
    recipe_path: str, overrides: Sequence[str], flags: Sequence[str], output_dir: Path, recipe: Recipe
) -> list[str]:
    """What `launch.py` gets inside the job (it then trains in-process under torchrun)."""
    return [
        str(Path(recipe_path).resolve()),
        *overrides,
        *flags,
        f"launch.nproc={processes_per_node(recipe)}",
        f"launch.nnodes={recipe.slurm.nodes}",
        f"output_dir={output_dir}",
    ]


def sbatch_headers(recipe: Recipe, log_pattern: str, repo: Path, array_size: int = 1) -> list[str]:
    s = recipe.slurm
    nproc = processes_per_node(recipe)
    options: list[tuple[str, object]] = [
        ("job-name", s.job_name or recipe.name),
        ("nodes", s.nodes),
        ("ntasks-per-node", 1),
        ("gpus-per-node", s.gpus_per_node or None),
        # a CPU-only job needs a core per process; with GPUs the cluster's default applies unless set
        ("cpus-per-task", s.cpus_per_task or (None if s.gpus_per_node else nproc)),
        ("mem", s.mem),
        ("partition", s.partition),
        ("account", s.account),
        ("qos", s.qos),
        ("time", s.time),
        ("signal", f"B:USR1@{s.signal_lead}" if s.signal_lead > 0 else None),
        ("array", f"0-{array_size - 1}" if array_size > 1 else None),
        ("output", log_pattern),
        ("open-mode", "append"),
        ("chdir", repo),
    ]
    lines = [f"#SBATCH --{k}={v}" for k, v in options if v is not None]
    lines.append("#SBATCH --requeue" if s.requeue else "#SBATCH --no-requeue")
    lines += [f"#SBATCH {x}" for x in s.extra]
    return lines


def template_body(template: Path = TEMPLATE) -> str:
    text = template.read_text()
    _, marker, body = text.partition(BODY_MARKER)
    if not marker:
        raise SlurmError(
            f"{template} lacks the line '{BODY_MARKER} ...' that separates headers from the body."
        )
    return body.split("\n", 1)[1]


def render_script(
    recipe: Recipe, variants: list[list[str]], log_pattern: str, repo: Path, python: str, command: str
) -> str:
    """The sbatch script for `variants` (one argument list, or several for a job array)."""
    s = recipe.slurm
    lines = [
        "#!/bin/bash",
        f"# Rendered by: {command}",
        "# Resubmit unchanged with: sbatch THIS_FILE (a requeued job resumes from the latest checkpoint).",
        *sbatch_headers(recipe, log_pattern, repo, array_size=len(variants)),
        "",
        f"export REPO={shlex.quote(str(repo))}",
        f"export PYTHON={shlex.quote(python)}",
        f"export NPROC_PER_NODE={processes_per_node(recipe)}",
    ]
    if s.setup:
        lines += ["# environment setup (slurm.setup)", s.setup]
    if len(variants) == 1:
        lines.append("set -- " + shlex.join(variants[0]))
    else:
        lines.append('case "${SLURM_ARRAY_TASK_ID:?not an array task}" in')
        lines += [f"    {i}) set -- {shlex.join(v)} ;;" for i, v in enumerate(variants)]
        lines.append('    *) echo "[slurm] no variant for array task $SLURM_ARRAY_TASK_ID" >&2; exit 2 ;;')
        lines.append("esac")
    return "\n".join(lines) + "\n\n" + template_body()


def prepare_job(
    recipe: Recipe,
    recipe_path: str,
    overrides: Sequence[str],
    flags: Sequence[str],
    launch_script: str,
    sweep: Sequence[str] = (),
    load=None,
) -> SlurmJob:
    """Render the job for `recipe` (and one variant per `--sweep` entry); nothing is written yet.

    A sweep entry is extra overrides, optionally led by another recipe file (`recipes/other.py k=v`):
    freeze rules live in recipe files, so several freeze configs are several files.
    `load(recipe_path, overrides)` re-resolves each variant, so a bad one fails before submission.
    """
    # the plan (and `launch.py` inside the job) see the job's world: processes per node x nodes
    recipe.launch.nproc, recipe.launch.nnodes = processes_per_node(recipe), recipe.slurm.nodes
    run_dir = Path(recipe.resolved_output_dir()).resolve()
    repo = Path(launch_script).resolve().parent
    slurm_dir = run_dir / "slurm"
    if sweep:
        variants = []
        for i, text in enumerate(sweep):
            extra = shlex.split(text)
            path = extra.pop(0) if extra and extra[0].endswith(".py") else recipe_path
            if load is not None:
                load(path, [*overrides, *extra])
            variants.append(job_arguments(path, [*overrides, *extra], flags, run_dir / f"sweep-{i}", recipe))
        log_pattern = str(slurm_dir / "slurm-%A_%a.out")
        script_path = slurm_dir / "sweep.sbatch"
    else:
        variants = [job_arguments(recipe_path, overrides, flags, run_dir, recipe)]
        log_pattern = str(slurm_dir / "slurm-%j.out")
        script_path = slurm_dir / "job.sbatch"
    command = shlex.join(["launch.py", *sys.argv[1:]]) if sys.argv[1:] else "launch.py --launcher slurm"
    script = render_script(recipe, variants, log_pattern, repo, sys.executable, command)
    return SlurmJob(run_dir, script_path, script, log_pattern, variants)


def require_slurm() -> str:
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise SlurmError(
            "Slurm is not installed here: `sbatch` is not on PATH. Run this on a cluster login node, or "
            "start a local test cluster with `scripts/slurm_test_cluster.sh start` and "
            "`export SLURM_CONF=/tmp/slurm-test/slurm.conf`. Without Slurm use --launcher torchrun."
        )
    return sbatch


def check_partition(partition: str | None) -> None:
    if partition is None:
        return
    result = _run(["sinfo", "--noheader", "--format=%R"])
    if result.returncode != 0:
        raise SlurmError(f"cannot list partitions (sinfo failed): {_first_lines(result)}")
    known = sorted({p.strip().rstrip("*") for p in result.stdout.split() if p.strip()})
    if partition not in known:
        raise SlurmError(
            f"partition {partition!r} is unknown to this cluster; available: {', '.join(known) or 'none'}. "
            "Pass one of them with --partition (or slurm.partition=...)."
        )


def submit(job: SlurmJob) -> str:
    """Check Slurm, write the script, `sbatch --parsable` it; returns the job id."""
    sbatch = require_slurm()
    check_partition(_recipe_partition(job))
    job.script_path.parent.mkdir(parents=True, exist_ok=True)
    job.script_path.write_text(job.script)
    job.script_path.chmod(0o755)
    result = _run([sbatch, "--parsable", str(job.script_path)])
    if result.returncode != 0:
        raise SlurmError(f"sbatch rejected the job ({job.script_path}): {_first_lines(result)}")
    job_id = result.stdout.strip().split(";")[0]
    if not job_id.isdigit():
        raise SlurmError(
            f"sbatch gave no job id (stdout {result.stdout!r}, stderr {result.stderr.strip()!r})."
        )
    return job_id


def launch_slurm(job: SlurmJob) -> int:
    job_id = submit(job)
    print(f"submitted batch job {job_id}" + (f" (array of {len(job.variants)})" if job.is_array else ""))
    print(f"log: {job.log_path(job_id)}")
    print(f"script: {job.script_path}")
    if job.is_array:
        for i, v in enumerate(job.variants):
            print(f"  task {i}: {shlex.join(v[1:])}")
    return 0


def _recipe_partition(job: SlurmJob) -> str | None:
    for line in job.script.splitlines():
        if line.startswith("#SBATCH --partition="):
            return line.split("=", 1)[1]
    return None


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise SlurmError(f"`{cmd[0]}` is not installed (Slurm client tools missing).") from None
    except subprocess.TimeoutExpired:
        raise SlurmError(f"`{shlex.join(cmd)}` did not answer within 60 s: is slurmctld reachable?") from None


def _first_lines(result: subprocess.CompletedProcess, n: int = 5) -> str:
    text = (result.stderr.strip() or result.stdout.strip() or f"exit {result.returncode}").splitlines()
    return " ".join(text[:n])
