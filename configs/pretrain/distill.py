r"""General distillation: a 1-layer student of the CPU-hour recipe's model (configs/pretrain/cpu_hour.py) learns its
teacher's masked-token distribution while pretraining on the same corpus, before it sees any label
(plm_jax/tasks/mlm_distillation.py). `plain` is the same student without a teacher, on the same tokenizer, data
and steps: the comparison that isolates what the teacher adds.

    python launch.py pretrain --config configs/pretrain/distill.py --workdir runs/distilled_1layer  # runs/cpu_hour
    python launch.py pretrain --config configs/pretrain/distill.py:plain --workdir runs/mlm_1layer
    python launch.py sweep configs/sweeps/curve.py:rotten_tomatoes,pretrained=runs/distilled_1layer+runs/mlm_1layer,\
minilm=0,sizes=1000 --workdir runs/curve_1layer --workers=2

`minilm` is MiniLM v2's relation transfer from all-MiniLM-L6-v2 (which has no MLM head): a 2-layer, 256-wide
student (0.15x the teacher's encoder FLOPs per token) learns the query, key and value relations of its last layer,
over the teacher's WordPiece tokens:

    python launch.py pretrain --config configs/pretrain/distill.py:minilm --workdir runs/minilm_student

The teacher is --config.distill.teacher (or `launch.py pretrain --teacher RUN`); the student takes its tokenizer.
"""

import ml_collections

from plm_jax.config_base import cramming_settings, mlm_pretrain_config

TEACHER = "runs/cpu_hour"
STEPS = 3_000


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    if arg not in ("", "plain", "minilm"):
        raise ValueError(f"configs/pretrain/distill.py:{arg}: give no argument (distilled), `plain` or `minilm`")
    config = mlm_pretrain_config()
    config.model.update(  # the recipe's width, one layer of its four: a quarter of its encoder FLOPs per token
        vocab_size=8192, num_layers=1, hidden_size=128, num_heads=2, mlp_dim=512, max_len=128)
    config.data.update(source="tfds", tfds_name="plm_offline_mix/task", tfds_text_feature="text", seq_len=128)
    config.train.update(batch_size=32, log_every=50, eval_every=1000, eval_batches=16, checkpoint_every=1000,
                        keep_checkpoints=2)
    cramming_settings(config, STEPS, lr=2e-3)
    if arg == "plain":
        config.data.tokenizer = f"{TEACHER}/tokenizer.model"
    elif arg == "minilm":
        config.model.update(vocab_size=30522, num_layers=2, hidden_size=256, num_heads=4, mlp_dim=1024, max_len=512)
        # relation heads divide both widths (384, 256); MiniLM trains on the relations alone (alpha 1)
        config.distill.update(teacher="minilm", kind="relations", alpha=1.0, relation_heads=16, teacher_layer=-1)
    else:
        config.distill.update(teacher=TEACHER, alpha=0.5, temperature=2.0)
    return config
