"""Atomic, self-describing Trainer checkpoints and the choice of which one to resume from.

A checkpoint is written into `tmp-checkpoint-N/`, completed with a manifest (`checkpoint.json`: step,
epoch, recipe hash, every file with its size), flushed to disk, and only then renamed to
`checkpoint-N/` (one `os.replace`, atomic on a POSIX filesystem). A run killed mid-save leaves a
`tmp-` directory, which the Trainer's own checkpoint scan (`^checkpoint-\\d+$`) never matches and the
next run deletes. Resume picks the newest `checkpoint-N/` whose manifest is present and whose files
all exist with the recorded sizes; anything else is skipped with a warning naming it.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import inspect
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainers.atomic_files import disk_full, is_write_failure
from trainers.errors import UserFacingError

logger = logging.getLogger(__name__)

MANIFEST = "checkpoint.json"
MANIFEST_FORMAT = 1
TMP_PREFIX = "tmp-"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


class CheckpointError(UserFacingError):
    """A checkpoint could not be written (disk full, permissions) or read."""


def recipe_hash(recipe_dict: dict[str, Any]) -> str:
    """Hash of the resolved recipe minus what a resumed run may change (`trainers.recipe.diff`) and its length."""
    from trainers.recipe.diff import stable_part

    blob = json.dumps(stable_part(recipe_dict), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    _fsync_dir(root)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def write_manifest(
    directory: Path, step: int, epoch: float | None, rhash: str | None, world_size: int | None = None
) -> dict[str, Any]:
    """Describe every file under `directory` (relative path -> size) in `checkpoint.json`.

    `world_size` (the processes that trained it) lets a rerun refuse to continue with another world size:
    the global batch, the data shards and the steps per epoch all depend on it.
    """
    files = {
        str(p.relative_to(directory)): p.stat().st_size
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    manifest = {
        "format": MANIFEST_FORMAT,
        "complete": True,
        "step": step,
        "epoch": epoch,
        "recipe_hash": rhash,
        "world_size": world_size,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": files,
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def finalize_checkpoint(
    tmp_dir: Path,
    final_dir: Path,
    step: int,
    epoch: float | None,
    rhash: str | None,
    world_size: int | None = None,
) -> None:
    """Manifest, fsync, then the atomic rename `tmp-checkpoint-N` -> `checkpoint-N`."""
    write_manifest(tmp_dir, step, epoch, rhash, world_size)
    _fsync_tree(tmp_dir)
    if final_dir.exists():  # the same step saved again (e.g. after a resume at exactly this step)
        stale = final_dir.with_name(f"{TMP_PREFIX}old-{final_dir.name}")
        shutil.rmtree(stale, ignore_errors=True)
        os.replace(final_dir, stale)
        os.replace(tmp_dir, final_dir)
        shutil.rmtree(stale, ignore_errors=True)
    else:
        os.replace(tmp_dir, final_dir)
    _fsync_dir(final_dir.parent)


def checkpoint_problem(directory: Path) -> str | None:
    """Why `directory` is not a complete checkpoint, or None when it is."""
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        return f"no {MANIFEST} (written last, so the save did not finish)"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return f"unreadable {MANIFEST} ({exc})"
    if (
        not isinstance(manifest, dict)
        or not manifest.get("complete")
        or not isinstance(manifest.get("files"), dict)
    ):
        return f"{MANIFEST} does not describe a complete checkpoint"
    for rel, size in manifest["files"].items():
        path = directory / rel
        if not path.is_file():
            return f"{rel} is missing"
        if path.stat().st_size != size:
            return f"{rel} has {path.stat().st_size} bytes, the manifest says {size}"
    return None


@dataclass
class ResumeChoice:
    checkpoint: str | None
    skipped: list[tuple[str, str]]


def read_manifest(checkpoint: str | Path) -> dict[str, Any]:
    """The manifest of a complete checkpoint (as `find_resume_checkpoint` returned it)."""
    return json.loads((Path(checkpoint) / MANIFEST).read_text())


def read_trainer_state(checkpoint: str | Path) -> dict[str, Any]:
    """`trainer_state.json` of a checkpoint ({} when absent or unreadable): global_step, max_steps, ..."""
    try:
        state = json.loads((Path(checkpoint) / "trainer_state.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return state if isinstance(state, dict) else {}


def _numbered(run_dir: Path) -> list[tuple[int, Path]]:
    """`checkpoint-N` directories, by N ascending."""
    found = []
    for entry in run_dir.iterdir():
        match = _CHECKPOINT_RE.match(entry.name)
        if match and entry.is_dir():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def find_resume_checkpoint(
    checkpoints_dir: Path, current_hash: str | None = None, quiet: bool = False
) -> ResumeChoice:
    """The newest complete checkpoint under `checkpoints_dir`; incomplete ones are listed in `skipped`."""
    skipped: list[tuple[str, str]] = []
    if not checkpoints_dir.is_dir():
        return ResumeChoice(None, skipped)
    for _, entry in reversed(_numbered(checkpoints_dir)):
        problem = checkpoint_problem(entry)
        if problem is None:
            if quiet:
                return ResumeChoice(str(entry), skipped)
            manifest = json.loads((entry / MANIFEST).read_text())
            saved_hash = manifest.get("recipe_hash")
            if current_hash and saved_hash and saved_hash != current_hash:
                logger.warning(
                    "resuming from %s, which was written by a different recipe (hash %s, now %s): model, data "
                    "or optimisation settings changed since; set training.resume=never to start over.",
                    entry,
                    saved_hash,
                    current_hash,
                )
            for name, why in skipped:
                logger.warning("not resuming from %s: %s", name, why)
            logger.info(
                "resuming from %s (global step %s, epoch %s)",
                entry,
                manifest.get("step"),
                manifest.get("epoch"),
            )
            return ResumeChoice(str(entry), skipped)
        skipped.append((str(entry), problem))
    if not quiet:
        for name, why in skipped:
            logger.warning("not resuming from %s: %s", name, why)
    return ResumeChoice(None, skipped)


def rotate_complete_checkpoints(run_dir: Path, limit: int | None, best: str | None) -> None:
    """Keep at most `limit` complete checkpoints (always the newest and the best); never touch incomplete ones.

    The Trainer's own rotation counts any `checkpoint-N` directory: a stray incomplete `checkpoint-999` would
    be "the most recent" and the real newest checkpoint would be deleted.
    """
    if not limit or limit <= 0:
        return
    complete = [path for _, path in _numbered(run_dir) if checkpoint_problem(path) is None]
    if len(complete) <= limit:
        return
    protected = {complete[-1].resolve()}
    if best:
        protected.add(Path(best).resolve())
    remaining = len(complete)
    for path in complete:
        if remaining <= max(limit, len(protected)):
            break
        if path.resolve() in protected:
            continue
        shutil.rmtree(path, ignore_errors=True)
        remaining -= 1


def remove_partial_checkpoints(checkpoints_dir: Path) -> list[str]:
    """Delete `tmp-checkpoint-*` leftovers of a save that was interrupted."""
    removed = []
    if checkpoints_dir.is_dir():
        for entry in checkpoints_dir.iterdir():
            if entry.name.startswith(TMP_PREFIX) and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry.name)
    if removed:
        logger.warning("removed partial checkpoint(s) of an interrupted save: %s", ", ".join(sorted(removed)))
    return removed


def save_failure(exc: Exception, directory: Path, last_good: str | None) -> CheckpointError:
    """A user-facing error for a failed checkpoint save (an OSError, or torch's zip writer on a full disk)."""
    shutil.rmtree(directory, ignore_errors=True)
    resume = (
        f"rerun the same command to resume from {last_good}"
        if last_good
        else "rerun the same command (no complete checkpoint exists yet, so training starts over)"
    )
    code = getattr(exc, "errno", None)
    if disk_full(exc):
        what = "the disk is full"
        fix = "free space there (or set output_dir= / --output-dir to a larger disk, or lower training.save_total_limit)"
    elif code in (errno.EACCES, errno.EPERM, errno.EROFS):
        what = "permission denied"
        fix = "make the directory writable or choose another output_dir"
    else:
        what = f"{getattr(exc, 'strerror', None) or exc}"
        fix = "fix the filesystem problem"
    return CheckpointError(
        f"Saving checkpoint {directory.name.removeprefix(TMP_PREFIX)} to {directory.parent} failed: {what} "
        f"({type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:300]}). The partial save was "
        f"removed; {fix}, then {resume}."
    )


class AtomicCheckpoints:
    """Trainer mixin: `_save_checkpoint` writes `tmp-checkpoint-N`, adds the manifest, renames it.

    Mirrors `transformers.Trainer._save_checkpoint` (5.23) step for step, with the target directory
    swapped for a temporary one and the rename done by the main process once every rank has written.
    """

    checkpoint_recipe_hash: str | None = None

    def _save_checkpoint(self, model, trial) -> None:  # noqa: C901 - mirrors the Trainer's method
        from transformers.trainer_callback import ExportableState
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        if self.hp_search_backend is None and trial is None:
            self.store_flos()
        run_dir = Path(self._get_output_dir(trial=trial))
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        final_dir = run_dir / name
        tmp_dir = run_dir / f"{TMP_PREFIX}{name}"
        last_good = find_resume_checkpoint(run_dir, quiet=True).checkpoint if self.args.should_save else None
        if self.args.should_save:
            shutil.rmtree(tmp_dir, ignore_errors=True)
        self._checkpoint_barrier()
        try:
            with save_under_model_names(self.accelerator.unwrap_model(self.model)):
                self.save_model(str(tmp_dir), _internal_call=True)
            if self.state.best_global_step:
                best_dir = run_dir / f"{PREFIX_CHECKPOINT_DIR}-{self.state.best_global_step}"
                if best_dir.exists() or self.state.best_global_step == self.state.global_step:
                    self.state.best_model_checkpoint = str(best_dir)
            if not self.args.save_only_model:
                self._save_optimizer_and_scheduler(str(tmp_dir))
                self._save_scaler(str(tmp_dir))
                self._save_rng_state(str(tmp_dir))
            if self.args.should_save:
                for cb in [
                    cb
                    for cb in self.callback_handler.callbacks + [self.control]
                    if isinstance(cb, ExportableState)
                ]:
                    cb_name = cb.__class__.__name__
                    cb_state = cb.state()
                    if isinstance(self.state.stateful_callbacks[cb_name], list):
                        self.state.stateful_callbacks[cb_name].append(cb_state)
                    else:
                        self.state.stateful_callbacks[cb_name] = cb_state
                self.state.save_to_json(str(tmp_dir / "trainer_state.json"))
                self._save_extra_state(tmp_dir)
            self._checkpoint_barrier()  # every rank's shards and RNG states are in tmp_dir
            if self.args.should_save:
                finalize_checkpoint(
                    tmp_dir,
                    final_dir,
                    self.state.global_step,
                    self.state.epoch,
                    self.checkpoint_recipe_hash,
                    self.args.world_size,
                )
        except Exception as exc:  # torch.save reports a full disk as a RuntimeError of its zip writer
            if not is_write_failure(exc):
                raise
            raise save_failure(exc, tmp_dir, last_good) from None
        self._checkpoint_barrier()
        if self.args.push_to_hub:
            self._push_from_checkpoint(str(final_dir))
        if self.args.should_save:
            rotate_complete_checkpoints(run_dir, self.args.save_total_limit, self.state.best_model_checkpoint)

    def _save_extra_state(self, directory: Path) -> None:
        """Main process: more files that belong with the checkpoint (subclasses add them)."""

    def _checkpoint_barrier(self) -> None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.barrier()


def ensure_writable(directory: Path, what: str) -> None:
    """Create `directory` and prove it takes a file, or fail with what to do (before any training)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise CheckpointError(
            f"{what} {str(directory)!r} is not writable ({type(exc).__name__}: {exc.strerror or exc}). "
            "Choose a writable directory with --output-dir or output_dir=..., or fix its permissions."
        ) from None


@contextmanager
def save_under_model_names(model: Any) -> Iterator[None]:
    """Within the block, `model.save_pretrained` writes the tensors under the model's own parameter names.

    transformers 5 saves under the checkpoint format's original names (ViT's `encoder.layer.N...`, DETR's
    ResNet backbone, BERT LayerNorm `gamma`/`beta`), which `from_pretrained` maps back but the Trainer's
    checkpoint reload (`load_state_dict(strict=False)`, on resume and for the best model) silently skips.
    A checkpoint is for this code to reload, so it keeps the loaded names; `best/` and exports keep the
    original format. Adapters (peft) are saved under peft's names either way.
    """
    save = getattr(model, "save_pretrained", None)
    if save is None or "save_original_format" not in inspect.signature(save).parameters:
        yield
        return
    model.save_pretrained = functools.partial(save, save_original_format=False)
    try:
        yield
    finally:
        del model.save_pretrained  # the class's method again
