"""Every shipped config loads and validates; the bench command runs and counts FLOPs like a hand count."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from plm_jax.models.config import TransformerConfig
from plm_jax.models.flops import encoder_flops_per_token, mlm_train_flops_per_step
from plm_jax.perf.bench import device_peak_flops, run_bench
from plm_jax.perf.peak_flops import table_peak_flops
from plm_jax.tasks.pretraining import validate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = ["configs/quickstart.py", "configs/bench/bert_mini.py", "configs/bench/bert_base.py"]


def load_config(path):
    spec = importlib.util.spec_from_file_location("cfg", os.path.join(ROOT, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


@pytest.mark.parametrize("path", CONFIGS)
def test_config_loads_validates_and_documents_its_command(path):
    config = load_config(path)
    validate(config)
    with open(os.path.join(ROOT, path)) as f:
        head = f.read(600)
    assert "python launch.py" in head and "Expected" in head


FINETUNE_CONFIGS = [f"configs/finetune/{name}.py" for name in ("rotten_tomatoes", "wiki_topics", "glue", "squad",
                                                                 "wiki_qa")]


@pytest.mark.parametrize("path", FINETUNE_CONFIGS)
def test_finetune_configs_load_validate_and_document_their_command(path):
    from plm_jax.tasks.classification import validate_task_config
    from plm_jax.tasks.finetuning import FinetuneTask

    config = load_config(path)
    FinetuneTask.validate(config)
    if config.task.kind != "qa":
        validate_task_config(config.task)
    with open(os.path.join(ROOT, path)) as f:
        head = f.read(900)
    assert "python launch.py finetune" in head and ("Expected" in head or "reference" in head.lower())


def test_glue_config_picks_the_task_and_its_metric():
    spec = importlib.util.spec_from_file_location("glue", os.path.join(ROOT, "configs/finetune/glue.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    stsb = module.get_config("stsb")
    assert (stsb.task.kind, stsb.task.main_metric, stsb.task.text_b) == ("regression", "pearson", "sentence2")
    with pytest.raises(ValueError, match="unknown GLUE task 'sts'"):
        module.get_config("sts")


def test_the_demo_runs_the_recipe_then_the_curve_config_of_each_task():
    from plm_jax.demo import TASKS, curve_argument, demo_configs
    from plm_jax.sweep.spec import expand, load_sweep

    (recipe,) = demo_configs()
    assert recipe.data.tfds_name == "plm_offline_mix/task" and recipe.train.steps >= 10_000
    for task in TASKS:
        argument = curve_argument(task, "runs/pre", "100+0", 3, True)
        plan = expand(load_sweep(f"{ROOT}/configs/sweeps/curve.py:{argument}"))
        assert {p.values["start"] for p in plan.points} == {"scratch", "pre", "minilm"}
        assert {p.values["labels"] for p in plan.points} == {"100", "all"} and plan.sweep.seeds == 3


def test_flops_match_a_hand_count():
    cfg = TransformerConfig(vocab_size=1000, hidden_size=64, num_layers=2, num_heads=4, mlp_dim=256)
    B, S, P = 4, 32, 5
    per_layer_token = 2 * (3 * 64 * 64) + 2 * 64 * 64 + 2 * 2 * 64 * 256 + 2 * S * 64 * 2
    head = B * P * (2 * 64 * 64 + 2 * 64 * 1000)
    assert mlm_train_flops_per_step(cfg, B, S, P) == 3 * (B * S * 2 * per_layer_token + head)
    assert encoder_flops_per_token(cfg, S) == 2 * per_layer_token  # inference, per token: no head


@pytest.mark.slow
def test_bench_runs_and_reports():
    config = load_config("configs/bench/bert_mini.py")
    config.model.update(vocab_size=512, num_layers=1, hidden_size=32, num_heads=2, mlp_dim=64)
    config.data.seq_len = 32
    config.train.batch_size = 8
    config.bench.update(steps=2, measure_peak=False, peak_flops=1e11)
    for head in ("sparse", "dense"):
        config.bench.head = head
        config.bench.op_profile = 4 if head == "dense" else 0
        r = run_bench(config)
        assert r["tokens_per_sec"] > 0 and 0 < r["mfu_pct_median"] < 100 and r["compile_s"] > 0
        assert r["steps_timed"] == 2 and r["peak_rss_mb"] > 0
        # the roofline: the HLO's bytes agree with XLA's total; a ceiling and the biggest non-matmul sources
        assert r["matmul_gb_per_step"] > 0 and r["other_gb_per_step"] > 0
        assert r["matmul_gb_per_step"] + r["other_gb_per_step"] == pytest.approx(r["xla_gb_per_step"], rel=0.1)
        assert r["bandwidth_source"] == "measured" and 0 < r["mfu_ceiling_pct"] <= 100
        assert len(r["other_gb_top"]) > 0 and all(gb > 0 for _, gb in r["other_gb_top"])
    # the per-op table names the model code behind each op; matmuls are found and timed
    assert len(r["top_ops"]) == 4 and r["op_ms_by_kind"]["matmul"] > 0
    assert any("BertForMaskedLM" in op["source"] for op in r["top_ops"]), r["top_ops"]


@pytest.mark.slow
def test_bench_and_compile_only_run_on_a_host_without_tensorflow():
    """GPU images often have JAX but no TensorFlow: the train step, `bench` and `compile-only` must not need it."""
    tiny = ["--config", "configs/bench/bert_mini.py", "--config.model.num_layers=1", "--config.model.hidden_size=32",
            "--config.model.num_heads=2", "--config.model.mlp_dim=64", "--config.model.vocab_size=512"]
    for command, extra in (("bench", ["--config.bench.steps=1", "--config.bench.peak_flops=1e11"]),
                           ("compile-only", [])):
        block = ("import sys, runpy\n"
                 "for name in ('tensorflow', 'tensorflow_text', 'tensorflow_datasets'): sys.modules[name] = None\n"
                 f"sys.argv = {['launch.py', command, *tiny, *extra]!r}\n"
                 "runpy.run_path('launch.py', run_name='__main__')\n")
        out = subprocess.run([sys.executable, "-c", block], cwd=ROOT, capture_output=True, text=True, timeout=300,
                             env={**os.environ, "PLM_JAX_HUGE_PAGES": "0"})
        assert out.returncode == 0, (command, out.stderr[-2000:])
        result = json.loads(out.stdout.strip().splitlines()[-1])
        assert result["tokens_per_sec"] > 0 if command == "bench" else result["estimated_peak_bytes_per_device"] > 0


@pytest.mark.slow
def test_gpu_benchmark_script_runs_its_parts_and_tabulates(tmp_path):
    """benchmarks/gpu_bert_base.py at BERT-tiny shapes on the CPU: the script a GPU lease runs must not fail there."""
    out = subprocess.run([sys.executable, "benchmarks/gpu_bert_base.py", "--smoke", "--out", str(tmp_path),
                          "--parts", "peak,ours_einsum_sparse,torch_eager"], cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["part"] for r in records] == ["peak", "ours_einsum_sparse", "torch_eager"]
    assert not [r for r in records if "error" in r], records
    ours, torch = records[1], records[2]
    assert ours["head"] == "sparse" and ours["layers"] == 2 and torch["attn"] == "sdpa"
    ratio = ours["tokens_per_sec"] / torch["tokens_per_sec"]
    assert f"| ours_einsum_sparse | {ours['tokens_per_sec']:,.0f} | {ratio:.2f}x |" in out.stdout
    assert f"| {ours['mfu_ceiling_pct']:.1f} | {ours['other_gb_per_step']:.1f} |" in out.stdout
    assert "===== torch_eager" in (tmp_path / "parts.log").read_text()
    bad = subprocess.run([sys.executable, "benchmarks/gpu_bert_base.py", "--smoke", "--parts", "nope"], cwd=ROOT,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown ['nope']" in bad.stderr


def load_benchmarks(monkeypatch, *names):
    """Scripts of benchmarks/ (a folder, not a package) loaded by path in order, the last returned; each is put in
    sys.modules under its name for the test, so that a later one imports an earlier one as the script does
    (gpu_bert_base: `from vs_peers import ...`)."""
    for name in names:
        spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "benchmarks", f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, name, module)
        spec.loader.exec_module(module)
    return module


def test_gpu_benchmark_part_that_fails_or_times_out_is_recorded_with_its_output(tmp_path, monkeypatch):
    gpu_bert_base = load_benchmarks(monkeypatch, "vs_peers", "gpu_bert_base")
    slow = [sys.executable, "-c", "import time; print('half way', flush=True); time.sleep(30)"]
    record = gpu_bert_base.run_part("slow", slow, 1, str(tmp_path))
    assert record["error"].startswith("exit timeout") and "half way" in record["error"]
    failing = [sys.executable, "-c", "raise SystemExit('no GPU here')"]
    assert "no GPU here" in gpu_bert_base.run_part("failing", failing, 30, str(tmp_path))["error"]
    log = (tmp_path / "parts.log").read_text()
    assert "===== slow" in log and "TIMEOUT after 1 s" in log and "===== failing" in log


def test_peak_flops_come_from_the_table_the_config_or_a_measurement():
    import jax.numpy as jnp
    import ml_collections

    assert table_peak_flops("TPU v5 lite", jnp.bfloat16) == 197e12
    assert table_peak_flops("TPU v5", jnp.bfloat16) == 459e12  # v5p, not matched as v5e
    assert table_peak_flops("TPU v3", jnp.float32) == 61.5e12  # per core
    assert table_peak_flops("NVIDIA H200", jnp.bfloat16) == 989e12
    assert table_peak_flops("NVIDIA H100 PCIe", jnp.float32) == 378e12
    assert table_peak_flops("NVIDIA A100-SXM4-80GB", jnp.bfloat16) == 312e12
    assert table_peak_flops("NVIDIA L40S", jnp.bfloat16) is None  # not the L4: measured instead
    assert table_peak_flops("cpu", jnp.float32) is None
    bench = ml_collections.ConfigDict(dict(measure_peak=False, peak_flops=2e11))
    assert device_peak_flops(bench, jnp.float32) == (2e11, "config")
    bench.peak_flops = 0.0  # this machine is a CPU: not in the table, so measured
    peak, source = device_peak_flops(bench, jnp.float32)
    assert source == "measured" and peak > 1e9


def test_op_profile_maps_trace_events_to_model_code():
    import jax
    import jax.numpy as jnp

    from plm_jax.perf import op_profile

    def layer(x, w):
        return jnp.tanh(x @ w)

    x, w = jnp.ones((64, 32)), jnp.ones((32, 16))
    compiled = jax.jit(layer).lower(x, w).compile()
    ops = op_profile.hlo_ops(compiled.as_text())
    dots = [name for name, (_, source) in ops.items() if source.endswith("dot_general")]
    assert dots and not any(source.startswith("jit(") for _, source in ops.values())
    events = [{"ph": "X", "name": dots[0], "dur": 3000}, {"ph": "X", "name": dots[0], "dur": 1000},
              {"ph": "X", "name": "not-an-op", "dur": 9999}]
    table = op_profile.op_table(events, compiled.as_text(), steps=2)
    assert table["ops"][0]["ms"] == 2.0 and table["ms_by_kind"] == {"matmul": 2.0}
    assert table["ops"][0]["shape"].endswith("[64,16]")
    # a GPU trace: kernels name their instruction in args.hlo_op, and the host's launch events are not counted
    gpu_events = [{"ph": "X", "name": "sm90_xmma_gemm_bf16", "dur": 500, "args": {"hlo_op": dots[0]}},
                  {"ph": "X", "name": "sm90_xmma_gemm_bf16", "dur": 700, "args": {"hlo_op": dots[0]}},
                  {"ph": "X", "name": dots[0], "dur": 9000}]
    assert op_profile.op_table(gpu_events, compiled.as_text(), steps=1)["ms_by_kind"] == {"matmul": 1.2}
    # a real trace: the dot ran, so it is in the table
    traced = op_profile.op_table(op_profile.trace_events(lambda: compiled(x, w), 2), compiled.as_text(), 2)
    assert any(row["kind"] == "matmul" for row in traced["ops"]), traced
    assert "dot_general" in op_profile.format_table(traced)


@pytest.mark.slow
def test_bench_measures_the_input_pipeline(tmp_path):
    from plm_jax.data.tokenizer import train_tokenizer
    from tests.corpus import documents, write_corpus

    config = load_config("configs/bench/bert_mini.py")
    config.model.update(vocab_size=56, num_layers=1, hidden_size=32, num_heads=2, mlp_dim=64)
    config.data.update(source="text", paths=(write_corpus(tmp_path / "c.txt", 500),), seq_len=32,
                       tokenizer=str(tmp_path / "spm.model"))
    train_tokenizer(documents(500), 56, config.data.tokenizer)
    config.train.batch_size = 8
    config.bench.update(steps=1, measure_peak=False, peak_flops=1e11, pipeline=True, pipeline_batches=20)
    r = run_bench(config)
    assert r["pipeline_tokens_per_sec"] > 0 and r["pipeline_over_step"] > 0


@pytest.mark.parametrize("arg", ["causal_lm", "mlm", "span_corruption", "mlm,cpu_hour", "span_corruption,cpu_hour"])
def test_bible_pretraining_configs_agree_with_their_objective_and_document_their_command(arg):
    import importlib.util

    from plm_jax.models.config import TransformerConfig
    from plm_jax.tasks.objectives import get_objective

    spec = importlib.util.spec_from_file_location("bible", os.path.join(ROOT, "configs/pretrain/bible.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(arg)
    objective, _, recipe = arg.partition(",")
    assert config.objective == objective
    get_objective(objective, TransformerConfig.from_config(config.model))
    validate(config)
    assert "python launch.py pretrain" in module.__doc__ and "Measured" in module.__doc__
    if recipe:  # the CPU-hour recipe's settings, on the same shape and corpus
        plain = module.get_config(objective)
        assert (config.model.dropout_rate, config.train.lr, config.train.end_lr_fraction) == (0.0, 2e-3, 0.0)
        assert config.data.mask_rate == (0.3 if objective == "mlm" else plain.data.mask_rate)
        assert config.model.hidden_size == plain.model.hidden_size and config.data.paths == plain.data.paths
        assert f"bible.py:{arg}" in module.__doc__
    with pytest.raises(ValueError, match="<objective>,cpu_hour"):
        module.get_config(f"{objective},fast")


@pytest.mark.parametrize("arg", ["de", "fr"])
def test_bible_translation_configs_validate(arg):
    import importlib.util

    from plm_jax.tasks.translation_task import TranslationTask

    spec = importlib.util.spec_from_file_location("bible_mt", os.path.join(ROOT, "configs/translate/bible.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(arg)
    TranslationTask.validate(config)
    assert config.task.target_lang == arg and config.model.architecture == "encoder_decoder"
    assert "python launch.py finetune" in module.__doc__ and "Measured" in module.__doc__
    with pytest.raises(ValueError, match=":de or :fr"):
        module.get_config("es")


def test_the_distill_sweep_pairs_each_student_seed_with_the_teacher_of_that_seed():
    from plm_jax.sweep.spec import SweepError, expand, load_sweep

    plan = expand(load_sweep(f"{ROOT}/configs/sweeps/distill.py:wiki_topics,teachers=t,layers=0+3,train.lr=1e-4"))
    runs = {(p.values["student"], p.seed): plan.stages[p.stages["wiki_topics"]].resolved for p in plan.points}
    assert len(runs) == 9
    assert runs["labels only", 2]["distill"]["teacher"] == ""
    assert runs["distilled", 1]["distill"] == dict(runs["labels only", 1]["distill"], teacher="t/seed=1")
    assert runs["distilled + unlabeled rest", 0]["distill"]["unlabeled"] == "rest"
    first = runs["distilled", 0]
    assert (first["init"], first["init_layers"], first["train"]["lr"]) == ("minilm", [0, 3], 1e-4)
    assert first["task"]["max_train_examples"] == 1000
    general = expand(load_sweep(f"{ROOT}/configs/sweeps/distill.py:rotten_tomatoes,init=runs/s,layers=all,"
                                "students=labels+rest"))
    assert [plan_init(general, p) for p in general.points] == [("runs/s", [])] * 6  # every layer of the student
    assert {p.values["student"] for p in general.points} == {"labels only", "distilled + unlabeled rest"}
    with pytest.raises(SweepError, match="first part must be a task, one of"):
        load_sweep(f"{ROOT}/configs/sweeps/distill.py:local")
    with pytest.raises(SweepError, match="students=labels\\+soft; choose from labels\\+distilled\\+rest"):
        load_sweep(f"{ROOT}/configs/sweeps/distill.py:rotten_tomatoes,students=labels+soft")


def test_the_prune_sweep_prunes_each_seeds_teacher_and_evaluates_before_the_re_finetune():
    from plm_jax.sweep.spec import expand, load_sweep

    plan = expand(load_sweep(f"{ROOT}/configs/sweeps/prune.py:wiki_topics,teachers=t,heads=8+2,seeds=2"))
    runs = {(p.values["heads"], p.seed): plan.stages[p.stages["wiki_topics"]].resolved for p in plan.points}
    assert sorted(runs) == [("2", 0), ("2", 1), ("8", 0), ("8", 1)]  # the axis labels
    assert (runs["2", 1]["init"], runs["2", 1]["prune"]["heads"], runs["8", 0]["init"]) == ("t/seed=1", 2, "t/seed=0")
    assert runs["8", 1]["train"]["eval_at_start"] and runs["8", 1]["task"]["max_train_examples"] == 1000


def plan_init(plan, point):
    resolved = plan.stages[next(iter(point.stages.values()))].resolved
    return resolved["init"], resolved["init_layers"]


def test_the_gpu_recipe_keeps_the_cpu_hour_corpus_and_settings_in_bert_small_shape():
    cpu, gpu = load_config("configs/pretrain/cpu_hour.py"), load_config("configs/pretrain/gpu_small.py")
    validate(gpu)
    for key in ("source", "tfds_name", "seq_len", "mask_rate", "eval_mask_rate"):
        assert gpu.data[key] == cpu.data[key], key
    for key in ("dropout_rate", "attention_dropout_rate", "vocab_size"):
        assert gpu.model[key] == cpu.model[key], key
    schedule = (gpu.train.decay, gpu.train.end_lr_fraction, gpu.train.warmup_steps)
    assert schedule == ("linear", 0.0, gpu.train.steps // 20)
    shape = TransformerConfig.from_config(gpu.model)
    assert (shape.num_layers, shape.hidden_size, shape.num_heads, shape.mlp_dim) == (4, 512, 8, 2048)
    tokens = gpu.train.steps * gpu.train.batch_size * gpu.data.seq_len
    assert tokens / 1.53e6 < 100  # passes over the 1.53M-token corpus: more would mostly repeat it
