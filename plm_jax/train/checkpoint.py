"""Orbax checkpoints of the train state and the data position, saved together, restorable onto any mesh and
into either layer layout (scanned or not)."""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from plm_jax.errors import UserError
from plm_jax.models import layout


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


class Checkpointer:
    """`CheckpointManager` with two items per step: `state` (arrays) and `data` (the input position, JSON)."""

    def __init__(self, directory: str, *, keep: int = 3, use_async: bool = True):
        self.directory = epath.Path(os.path.abspath(directory))  # Orbax needs absolute paths
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=use_async, create=True, cleanup_tmp_directories=True
        )
        self._last_saved: int | None = None
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=options,
            item_handlers={"state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler()},
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, data: dict[str, Any], *, force: bool = False) -> bool:
        """Saves `step` unless it is already saved or being saved: a stop signal that lands on a periodic
        checkpoint's step finds its checkpoint there (Orbax would raise StepAlreadyExistsError)."""
        if step == self._last_saved or step in self.manager.all_steps():
            return False
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data))
        saved = self.manager.save(step, args=args, force=force)
        if saved:
            self._last_saved = step
        return saved

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

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def tree_equal(a: Any, b: Any) -> bool:
    """Bitwise equality of two pytrees of arrays (used by resume checks)."""
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))
