r"""MLM mask rate 0.15 / 0.30 / 0.40 (Wettig et al. 2023; MosaicBERT trains at 0.30), 3 seeds, evaluated at 0.15.

    python launch.py sweep configs/sweeps/mask_rate.py --workdir runs/mask_rate
    python launch.py report runs/mask_rate          # runs/mask_rate/report.md, results.csv, plots/

Each point pretrains configs/sweeps/base.py:mlm for 200 steps (819k tokens), then fine-tunes Rotten Tomatoes
sentiment for 2 epochs on all 10,322 reviews and scores its 1,066 test reviews. Held-out MLM accuracy is measured with
15% of tokens selected whatever the training rate (data.eval_mask_rate), so the rates share one yardstick.
Expected on 2 CPU cores: see the README's sweep section for the measured time and result of this exact config.
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
