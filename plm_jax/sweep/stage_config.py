"""The config of one sweep stage, for `launch.py --config plm_jax/sweep/stage_config.py:<stage.json>`.

stage.json holds the base config and the overrides the sweep checked; building it here, with the same code,
gives the run exactly the config the sweep resolved (no round trip through command-line strings).
"""

import json

import ml_collections

from plm_jax.sweep.spec import build_stage_config


def get_config(stage_json: str) -> ml_collections.ConfigDict:
    with open(stage_json, encoding="utf-8") as f:
        stage = json.load(f)
    return build_stage_config(stage["base"], stage["overrides"], stage_json)
