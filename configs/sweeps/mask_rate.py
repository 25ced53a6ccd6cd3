r"""MLM mask rate 0.15 / 0.30 / 0.40 (Wettig et al. 2023; MosaicBERT trains at 0.30), 3 seeds, evaluated at 0.15.

    python launch.py sweep configs/sweeps/mask_rate.py --workdir runs/mask_rate
    python launch.py report runs/mask_rate          # runs/mask_rate/report.md, results.csv, plots/

Each point pretrains configs/sweeps/base.py:mlm for 200 steps (819k tokens), then fine-tunes Rotten Tomatoes
sentiment for 2 epochs on all 10,322 reviews and scores its 1,066 test reviews. Held-out MLM accuracy is
measured with 15% of tokens selected whatever the training rate (data.eval_mask_rate): one yardstick for all.
Expected on 2 CPU cores with --workers=2 (measured 2026-11-29): about 25 minutes (18 stages: 0.43 h of
pretraining and 0.28 h of fine-tuning, summed). Result, mean [95% interval] over 3 seeds, at 0.15 / 0.30 / 0.40:
held-out MLM accuracy at 15% masking 0.0715 [0.0675, 0.0754] / 0.0725 [0.0583, 0.0867] / 0.0754 [0.0673, 0.0836];
Rotten Tomatoes test accuracy 0.627 [0.458, 0.795] / 0.617 [0.378, 0.856] / 0.638 [0.453, 0.823]. Every paired
difference from 0.15 has an interval that includes zero: 200 steps are too few to tell the rates apart, and 3 of
the 9 fine-tunes stayed at the majority class (0.559), which dominates the downstream spread. For a real answer,
raise the budget (Budget(steps=2000)) and the seeds.
"""

from plm_jax.sweep.spec import Budget, Stage, Sweep, axis

FINETUNE = {"train.epochs": 2, "train.lr": 1e-3, "train.log_every": 20}  # all 10,322 reviews


def get_config() -> Sweep:
    return Sweep(
        name="mask_rate",
        pretrain=Stage("configs/sweeps/base.py:mlm", {"data.eval_mask_rate": 0.15}),
        finetune={"rotten_tomatoes": Stage("configs/finetune/rotten_tomatoes.py", FINETUNE)},
        axes=[axis("pretrain.data.mask_rate", [0.15, 0.30, 0.40])],
        seeds=3,
        budget=Budget(steps=200),
        metrics=["pretrain/accuracy", "pretrain/loss", "rotten_tomatoes/test/accuracy",
                 "rotten_tomatoes/test/f1_macro"],
    )
