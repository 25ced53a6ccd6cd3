"""Orbax checkpoints of the train state and the data position, saved together, restorable onto any mesh and
into either layer layout (scanned or not)."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from plm_jax.errors import UserError
from plm_jax.models import layout
from plm_jax.train import checksums

log = logging.getLogger("plm_jax")


class CheckpointMismatchError(UserError):
    """The checkpoint was written by a model or optimizer of another shape."""


def _key_name(key: Any) -> str:
    return str(getattr(key, "name", getattr(key, "key", getattr(key, "idx", key))))


def _flat_shapes(tree: Any) -> dict[str, tuple]:
    """`a/b/0/c` -> shape; the same names whether the tree is our dataclass or Orbax's saved metadata."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {"/".join(_key_name(k) for k in path): tuple(leaf.shape) for path, leaf in flat if hasattr(leaf, "shape")}


def check_compatible(saved_shapes: dict[str, tuple], abstract: Any, where: str) -> None:
    """Compares saved array shapes (`_flat_shapes` of the checkpoint's metadata) with what the config builds;
    raises with the first differences named."""
    want_shapes = _flat_shapes(abstract)
    missing = sorted(set(want_shapes) - set(saved_shapes))
    extra = sorted(set(saved_shapes) - set(want_shapes))
    differ = [k for k in sorted(set(want_shapes) & set(saved_shapes)) if saved_shapes[k] != want_shapes[k]]
    if missing or extra or differ:
        parts = []
        if differ:
            k = differ[0]
            parts.append(f"{len(differ)} arrays differ in shape, e.g. {k}: checkpoint {saved_shapes[k]} "
                         f"vs config {want_shapes[k]}")
        if missing:
            parts.append(f"{len(missing)} arrays missing from the checkpoint, e.g. {missing[0]}")
        if extra:
            parts.append(f"{len(extra)} unexpected arrays in the checkpoint, e.g. {extra[0]}")
        raise CheckpointMismatchError(f"checkpoint {where} does not match the configured model: " + "; ".join(parts))


def _in_saved_layout(saved_shapes: dict[str, tuple], abstract: Any) -> tuple[Any, Any]:
    """`abstract` in the checkpoint's layer layout (scanned or not), and the function that brings the restored
    tree back to `abstract`'s layout and shardings (None when the layouts already agree)."""
    saved_layout = layout.layout_of(set(saved_shapes))
    want_layout = layout.layout_of(set(_flat_shapes(abstract)))
    if not (saved_layout and want_layout and saved_layout != want_layout):
        return abstract, None
    to_saved = layout.abstract_to_scanned if saved_layout == "scanned" else layout.abstract_to_unscanned
    convert = layout.to_scanned if want_layout == "scanned" else layout.to_unscanned
    shardings = jax.tree.map(lambda x: x.sharding, abstract)
    return to_saved(abstract), lambda tree: jax.jit(convert, out_shardings=shardings)(tree)


class CheckpointSaveError(UserError):
    """A checkpoint could not be written (an unwritable or full disk): the run stops with one line."""


class Checkpointer:
    """`CheckpointManager` with two items per step: `state` (arrays) and `data` (the input position, JSON)."""

    def __init__(self, directory: str, *, keep: int = 3, use_async: bool = True):
        self.directory = epath.Path(os.path.abspath(directory))  # Orbax needs absolute paths
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=use_async, create=True, cleanup_tmp_directories=True
        )
        self._last_saved: int | None = None
        self._unsealed: list[int] = []  # saved, not yet checksummed (an async save may still be writing)
        self.failed = False
        try:
            self.manager = ocp.CheckpointManager(
                self.directory,
                options=options,
                item_handlers={"state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler()},
            )
        except OSError as e:
            raise UserError(f"cannot use the checkpoint directory {self.directory}: {e.strerror or e}") from None

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, data: dict[str, Any], *, force: bool = False) -> bool:
        """Saves `step` unless it is already saved or being saved: a stop signal that lands on a periodic
        checkpoint's step finds its checkpoint there (Orbax would raise StepAlreadyExistsError)."""
        if step == self._last_saved or step in self.manager.all_steps():
            return False
        self._seal()  # the previous save has finished (Orbax would wait for it here anyway): checksum it
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data))
        try:  # a failed earlier (async) save also surfaces here
            saved = self.manager.save(step, args=args, force=force)
        except Exception as e:  # noqa: BLE001  (Orbax wraps the OS error in several exception types)
            raise self._save_error(step, e) from e
        if saved:
            self._last_saved = step
            self._unsealed.append(step)
        return saved

    def _seal(self) -> None:
        """Checksums of the steps whose saves have committed (process 0; train/checksums.py)."""
        if not self._unsealed:
            return
        try:
            self.manager.wait_until_finished()
        except Exception as e:  # noqa: BLE001
            raise self._save_error(self._last_saved or -1, e) from e
        for step in self._unsealed:
            step_dir = os.path.join(str(self.directory), str(step))
            if jax.process_index() == 0 and os.path.isdir(step_dir):
                try:
                    checksums.write_checksums(step_dir)
                except OSError as e:
                    raise CheckpointSaveError(f"writing the checksums of checkpoint {step_dir} failed: "
                                              f"{e.strerror} ({e.filename})") from None
        self._unsealed = []

    def _save_error(self, step: int, error: BaseException) -> CheckpointSaveError:
        self.failed = True
        cause: BaseException | None = error
        while cause is not None and not isinstance(cause, OSError):  # the OS error inside Orbax's wrapping
            cause = cause.__cause__ or cause.__context__
        reason = f"{cause.strerror} ({cause.filename})" if isinstance(cause, OSError) and cause.strerror else (
            f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
        complete = self._complete_step()
        kept = (f"the last complete checkpoint is step {complete}" if complete is not None
                else "no complete checkpoint is readable there")
        return CheckpointSaveError(f"saving the checkpoint of step {step} in {self.directory} failed: {reason}; "
                                   f"{kept}")

    def _complete_step(self) -> int | None:
        try:
            steps = [int(p.name) for p in self.directory.iterdir() if p.name.isdigit()]
        except OSError:
            return None
        return max(steps) if steps else None

    def restore_latest(self, abstract_state: Any) -> tuple[Any, dict[str, Any], int] | None:
        """(state, data, step) of the newest intact checkpoint; None when none was saved.

        A step whose files fail their checksums (checked by process 0, the verdict shared by every host), or an
        unsealed step (saved, then killed before its checksums were written) that a single process cannot
        restore, is reported in one line and moved aside, never deleted; the next older step is tried. An error
        restoring a step whose checksums hold is not damage (memory, I/O, versions): it is raised as it is.
        """
        moved: list[int] = []
        while (step := self.latest_step()) is not None:
            step_dir = os.path.join(str(self.directory), str(step))
            problem = _shared_verdict(checksums.damage(step_dir) if jax.process_index() == 0 else None)
            if not problem:
                try:
                    state, data = self.restore(step, abstract_state)
                except CheckpointMismatchError:
                    raise  # another model: not damage, and nothing to move
                except Exception as e:  # noqa: BLE001  (Orbax fails on damaged files in many ways)
                    if problem is not None or jax.process_count() > 1:
                        raise  # sealed and intact, or several hosts that could disagree: not ours to judge
                    first_line = str(e).splitlines()[0][:200] if str(e) else ""
                    problem = f"it does not restore ({type(e).__name__}: {first_line}) and has no checksums"
                else:
                    if moved:
                        log.warning("resuming from step %d: %d steps since it are lost with the damaged checkpoint"
                                    "%s of step %s", step, moved[0] - step, "s" if len(moved) > 1 else "",
                                    ", ".join(map(str, moved)))
                    return state, data, step
            moved.append(step)
            self._move_aside(step, problem)
        if moved:
            raise UserError(f"every checkpoint in {self.directory} is damaged (steps {moved}, moved to "
                            f"{os.path.join(os.path.dirname(str(self.directory)), 'damaged_checkpoints')}); "
                            "nothing to resume from: start a new --workdir")
        return None

    def _move_aside(self, step: int, problem: str) -> None:
        aside = os.path.join(os.path.dirname(str(self.directory)), "damaged_checkpoints",
                             f"{os.path.basename(str(self.directory))}-{step}-{time.strftime('%Y%m%dT%H%M%S')}")
        if jax.process_index() == 0:
            os.makedirs(os.path.dirname(aside), exist_ok=True)
            shutil.move(os.path.join(str(self.directory), str(step)), aside)
            log.warning("checkpoint %s is damaged: %s; moved it to %s", self.directory / str(step), problem, aside)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"plm_jax checkpoint {step} moved aside")
        self.manager.reload()

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
        """Restores onto the shardings attached to `abstract_state` (any mesh shape).

        A checkpoint written with the other `model.scan_layers` is read in its own layout and converted (the
        parameters and every optimizer tree that mirrors them), so switching scan on or off resumes a run.
        """
        where, saved_shapes = self._saved_shapes(step, "train state")
        target, convert_back = _in_saved_layout(saved_shapes, abstract_state)
        check_compatible(saved_shapes, target, where)
        restored = self.manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore()),
        )
        state = restored["state"] if convert_back is None else convert_back(restored["state"])
        return state, dict(restored["data"])

    def restore_params(self, step: int, abstract_params: Any) -> Any:
        """Only the parameters of a checkpoint (a full train state, or parameters alone as in `best/`), onto
        the shardings of `abstract_params`: inference builds no optimizer and reads no optimizer moments."""
        problem = checksums.damage(os.path.join(str(self.directory), str(step)))
        if problem:
            raise UserError(f"checkpoint {self.directory / str(step)} is damaged: {problem}")
        where, saved_shapes = self._saved_shapes(step, "parameters")
        in_state = any(name.startswith("params/") for name in saved_shapes) and any(
            name.startswith("opt_state/") for name in saved_shapes)
        if in_state:
            saved_shapes = {k.removeprefix("params/"): v for k, v in saved_shapes.items() if k.startswith("params/")}
        target, convert_back = _in_saved_layout(saved_shapes, abstract_params)
        check_compatible(saved_shapes, target, where)
        item = {"params": target} if in_state else target
        restore_args = jax.tree.map(lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding, dtype=x.dtype), item)
        reader = ocp.CheckpointManager(self.directory, options=ocp.CheckpointManagerOptions(create=False),
                                       item_handlers={"state": ocp.PyTreeCheckpointHandler()})
        try:
            restored = reader.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
                item=item, restore_args=restore_args, partial_restore=True)))["state"]
        finally:
            reader.close()
        params = restored["params"] if in_state else restored
        return params if convert_back is None else convert_back(params)

    def _saved_shapes(self, step: int, what: str) -> tuple[str, dict[str, tuple]]:
        """(the step's path, its saved arrays' shapes by flat name), from the checkpoint's metadata alone."""
        where = str(self.directory / str(step))
        try:
            saved = self.manager.item_metadata(step)["state"]
        except (KeyError, TypeError) as e:
            raise CheckpointMismatchError(f"checkpoint {where} holds no {what} ({e})") from None
        return where, _flat_shapes(saved)

    def check(self) -> None:
        """Raises the error of an async save that already failed (cheap: no waiting), so a run stops at its next
        log step rather than a checkpoint interval later."""
        try:
            self.manager.check_for_errors()
        except Exception as e:  # noqa: BLE001
            raise self._save_error(self._last_saved or -1, e) from e

    def wait(self) -> None:
        try:
            self.manager.wait_until_finished()
        except Exception as e:  # noqa: BLE001
            raise self._save_error(self._last_saved or -1, e) from e

    def close(self) -> None:
        """Waits for a save in flight; a failed one is raised once, and never leaves a thread to hang the exit."""
        if self.failed:  # Orbax's threads may still be failing: closing its event loop under them only adds
            return  # tracebacks ("Event loop is closed"); launch.py exits without waiting for them
        try:
            self.wait()
            self._seal()
        finally:
            with contextlib.suppress(Exception):
                self.manager.close()


def _shared_verdict(problem: str | None) -> str | None:
    """Process 0's verdict on a step's checksums (None: unsealed, "": intact, else what is wrong), on every host."""
    if jax.process_count() == 1:
        return problem
    from jax.experimental import multihost_utils

    code = {None: 0, "": 1}.get(problem, 2) if jax.process_index() == 0 else 0
    code = int(multihost_utils.broadcast_one_to_all(np.int32(code)))
    return {0: None, 1: ""}.get(code, problem or "its files do not match their checksums (found by process 0)")


def tree_equal(a: Any, b: Any) -> bool:
    """Bitwise equality of two pytrees of arrays (used by resume checks)."""
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))
