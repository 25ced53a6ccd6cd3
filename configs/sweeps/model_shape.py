r"""Model shape at equal compute: 1 x 256, 2 x 128 and 6 x 64 (layers x width), each given the training FLOPs of
200 steps of the 2 x 128 base model (3.07e12, counted per matmul as for MFU), 2 seeds.

    python launch.py sweep configs/sweeps/model_shape.py --workdir runs/model_shape
    python launch.py report runs/model_shape

The flops budget gives each shape its own train.steps (105, 200 and 263 steps), so a wider model trains
for fewer steps; a wall-clock version of the same question is `budget=Budget(minutes=2)` (each shape is timed
once, and the steps recorded). Expected on 2 CPU cores: not measured yet (pretraining, then the same
Rotten Tomatoes fine-tune as configs/sweeps/mask_rate.py).
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
