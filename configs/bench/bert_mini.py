r"""Train-step benchmark, BERT-mini (4 layers, hidden 256, 4 heads), seq 128, batch 32, vocab 30522.

    python launch.py bench --config configs/bench/bert_mini.py                     # sparse MLM head (as trained)

Expected on 2 shared CPU cores (measured 2026-11-29): about 30 s; ~4,100-4,900 tokens/s on one CPU device per core
(mesh.cpu_devices=-1), MFU ~62% against the fp32 matmul peak measured in the same process; 2.9x the best Hugging
Face peer (benchmarks/vs_peers.py; the table is in docs/benchmarks.md).
Prints one JSON line: tokens/s, MFU, compile time, peak memory. Variants:

    python launch.py bench --config configs/bench/bert_mini.py --config.bench.head=dense   # the peers' work
    python launch.py bench --config configs/bench/bert_mini.py --config.bench.op_profile=25   # + per-op times
    python launch.py bench --config configs/bench/bert_mini.py --config.bench.pipeline=True \
        --config.data.tokenizer=runs/quickstart/tokenizer.model  # + tf.data alone on the quickstart corpus

Other sizes: --config.model.num_layers / hidden_size / num_heads / mlp_dim, e.g. BERT-tiny = 2/128/2/512,
BERT-small = 4/512/8/2048.
"""

import ml_collections

from plm_jax.config_base import bench_config


def get_config() -> ml_collections.ConfigDict:
    config = bench_config("bert_mini", steps=5)
    config.model.update(vocab_size=30522, num_layers=4, hidden_size=256, num_heads=4, mlp_dim=1024, max_len=512)
    config.data.seq_len = 128
    config.train.update(batch_size=32, steps=1000, warmup_steps=100)
    config.mesh.update(data=-1, fsdp=1, tensor=1)
    return config
