r"""Train-step benchmark, BERT-base (12 layers, hidden 768, 12 heads), seq 128, bf16 compute, batch 256: one GPU.

    python launch.py bench --config configs/bench/bert_base.py                        # sparse MLM head (as trained)
    python benchmarks/gpu_bert_base.py --out runs/bench/gpu_bert_base                  # + HF PyTorch, same GPU

Expected on one H200 (measured 2026-11-29): compile ~34 s; ~524,000 tokens/s (62.5 ms a step), MFU ~29%; with
cuDNN attention ~566,000 tokens/s, MFU ~31%; HF torch.compile gave 504,000 in the same run (docs/benchmarks.md).
A GPU config: on 2 CPU cores one step takes minutes. Parameters and optimizer state stay fp32; matmuls run in bf16,
softmax and loss in fp32. MFU is against the table's bf16 peak for the device (plm_jax/perf/peak_flops.py;
H200: 989 TFLOP/s dense). Variants:

    python launch.py bench --config configs/bench/bert_base.py --config.model.attention=cudnn \
        --config.model.attention_dropout_rate=0   # cuDNN fused attention (it has no attention-probability dropout)
    python launch.py bench --config configs/bench/bert_base.py --config.bench.head=dense   # the peers' work
    python launch.py compile-only --config configs/bench/bert_base.py --target=h200   # no GPU: memory, roofline
"""

import ml_collections

from plm_jax.config_base import bench_config


def get_config() -> ml_collections.ConfigDict:
    config = bench_config("bert_base", steps=20)
    config.model.update(vocab_size=30522, num_layers=12, hidden_size=768, num_heads=12, mlp_dim=3072, max_len=512,
                        dtype="bfloat16")
    config.data.seq_len = 128
    config.train.update(batch_size=256, steps=1000, warmup_steps=100)
    config.mesh.update(data=-1, fsdp=1, tensor=1)
    return config
