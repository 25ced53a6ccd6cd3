"""A fine-tune that also returns the parameters it started from, as grafted (tasks/starting_point.py)."""

import jax
import pytest

from plm_jax.run import train
from plm_jax.tasks import starting_point


def finetune_recording_graft(config, workdir: str):
    """(results, grafted params): the run's own starting point, to compare with an independent reference."""
    grafted = []
    real_graft = starting_point.graft

    def graft_and_record(*a):
        out = real_graft(*a)
        grafted.append(jax.device_get(out))
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(starting_point, "graft", graft_and_record)
        results = train(config, workdir)
    assert len(grafted) == 1
    return results, grafted[0]
