r"""Model shape at equal compute: 1 x 256, 2 x 128 and 6 x 64 (layers x width), each given the training FLOPs of
200 steps of the 2 x 128 base model (3.07e12, counted per matmul as for MFU), 2 seeds.

    python launch.py sweep configs/sweeps/model_shape.py --workdir runs/model_shape
    python launch.py report runs/model_shape

The flops budget gives each shape its own train.steps (105, 200 and 263 steps), so a wider model trains
for fewer steps; a wall-clock version of the same question is `budget=Budget(minutes=2)` (each shape is timed
once, and the steps recorded). Pretraining, then the same Rotten Tomatoes fine-tune as
configs/sweeps/mask_rate.py. Expected on 2 CPU cores with --workers=2 (measured 2026-11-29): 14 minutes; equal
FLOPs took 100 s (1x256), 121 s (2x128) and 185 s (6x64) of pretraining wall time: narrow layers use the cores
worse. Result, mean [95% interval] over 2 seeds, 1x256 / 2x128 / 6x64: held-out MLM accuracy 0.0514 / 0.0717
[0.0521, 0.0913] / 0.0514 (1x256 and 6x64 both seeds at 0.0514: still predicting the most frequent token);
Rotten Tomatoes test accuracy 0.581 [0.403, 0.759] / 0.661 [0.227, 1.095] / 0.692 [0.645, 0.739]. Only the
pretraining comparison 2x128 vs 1x256 excludes zero (accuracy +0.020 [0.001, 0.040], loss -0.093 [-0.108, -0.079]).
"""

from plm_jax.sweep.spec import Axis, Budget, Stage, Sweep

FINETUNE = {"train.epochs": 2, "train.lr": 1e-3, "train.log_every": 20}  # all 10,322 reviews
SHAPES = Axis({"pretrain.model.num_layers": [1, 2, 6], "pretrain.model.hidden_size": [256, 128, 64],
               "pretrain.model.num_heads": [4, 2, 2], "pretrain.model.mlp_dim": [1024, 512, 256]},
              name="shape", labels=["1x256", "2x128", "6x64"])


def get_config() -> Sweep:
    return Sweep(
        name="model_shape",
        pretrain=Stage("configs/sweeps/base.py:mlm"),
        finetune={"rotten_tomatoes": Stage("configs/finetune/rotten_tomatoes.py", FINETUNE)},
        axes=[SHAPES],
        seeds=2,  # 3 or more for a paper; 2 keep the example under half an hour on 2 CPU cores
        budget=Budget(flops=3.0727e12),
        metrics=["pretrain/accuracy", "pretrain/loss", "rotten_tomatoes/test/accuracy"],
    )
