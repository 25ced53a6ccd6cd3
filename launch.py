"""plm_jax's one command line: `python launch.py COMMAND [flags]`. `python launch.py --help` lists the commands,
`python launch.py COMMAND --help` the flags of one (each command has its own).

    python launch.py pretrain  --config configs/quickstart.py --workdir runs/quickstart [--config.train.steps=…]
    python launch.py tokenizer --config configs/quickstart.py --output runs/spm.model
    python launch.py bench     --config configs/bench/bert_mini.py
    python launch.py compile-only --config configs/quickstart.py --config.mesh.fsdp=2   # memory before a run
    python launch.py compile-only --config configs/bench/bert_base.py --target=h100:8   # for GPUs not here
    python launch.py pretrain  --config configs/quickstart.py --workdir runs/q --profile_steps=10,15  # a trace
    python launch.py finetune  --config configs/finetune/rotten_tomatoes.py --init runs/quickstart --workdir runs/rt
    python launch.py evaluate  --workdir runs/rt                       # best checkpoint on the eval/test splits
    python launch.py predict   --workdir runs/rt --input reviews.txt --output labels.jsonl
    python launch.py export    --workdir runs/rt --output runs/rt-hf   # a Hugging Face BERT directory
    python launch.py demo      --workdir runs/demo [--pretrained runs/cpu_hour]   # pretraining vs random init
    python launch.py wiki-qa   --output runs/wiki_qa                   # a SQuAD-format QA set from Wikipedia leads
    python launch.py bible     --output data/bible_en_de --versions k,e  # aligned verse pairs, split by book
    python launch.py finetune  --config configs/translate/bible_en_de.py --workdir runs/en_de   # BLEU, beam search
    python launch.py predict   --workdir runs/en_de --input sentences.txt --output translations.txt
    python launch.py generate  --workdir runs/gpt --input prompts.txt --output samples.jsonl  # a causal-LM run
    python launch.py sweep     configs/sweeps/mask_rate.py --workdir runs/mask_rate [--workers=2]  # ablations
    python launch.py report    runs/mask_rate                          # report.md, results.csv, plots/
    python launch.py tpu run --name=my-v5e --zone=us-west4-a --type=v5litepod-16 [--dry_run] \
        -- pretrain --config configs/quickstart.py --workdir /mnt/bucket/run

Errors that come from the user's input (config, files, checkpoints, flags) are printed as one line, exit status 2
(PLM_DEBUG=1 raises them instead, with the traceback).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import sys
import textwrap
from collections.abc import Callable
from typing import Any

# TensorFlow (tf.data, on the CPU) logs from C++ as it starts; set before anything imports it. Without an NVIDIA
# GPU its first op logs an ERROR, "failed call to cuInit", that only level 3 hides (it applies to JAX's C++ logs
# too: their fatal messages still print). With a GPU, level 2 keeps TensorFlow's errors.
_NVIDIA_GPU = os.path.exists("/dev/nvidiactl") or shutil.which("nvidia-smi") is not None
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2" if _NVIDIA_GPU else "3")

if __name__ == "__main__":  # first: glibc reads its malloc tunables only at start-up (plm_jax/huge_pages.py)
    from plm_jax.huge_pages import reexec_with_huge_pages

    reexec_with_huge_pages()
    from plm_jax import quiet_tensorflow

    quiet_tensorflow.install()  # `import tensorflow` prints oneDNN and CUDA-probe lines that no level hides

from absl import flags  # noqa: E402
from absl import logging as absl_logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from plm_jax.errors import USER_ERRORS, UserError  # noqa: E402


def _train(config: Any, workdir: str) -> dict[str, Any]:
    """Trains (or resumes) the run `config` describes in `workdir`: a pretraining or, with `task`, a fine-tune."""
    from plm_jax.run import train

    return train(config, workdir)


# --- flags: each command defines its own, in a FlagValues of its own ----------------------------------------------

FlagDefiner = Callable[[flags.FlagValues], Any]


def _flag(define: Callable[..., Any], name: str, default: Any, help_: str) -> FlagDefiner:
    return lambda fv: define(name, default, help_, flag_values=fv)


def distributed_flags(fv: flags.FlagValues) -> None:
    """The flags of a command that runs JAX: joining a multi-process run, and the CPU device count."""
    flags.DEFINE_string("coordinator", None, "Multi-process: host:port of process 0.", flag_values=fv)
    flags.DEFINE_integer("num_processes", 1, "Multi-process: how many processes in all.", flag_values=fv)
    flags.DEFINE_integer("process_id", None, "Multi-process: this process's index.", flag_values=fv)
    flags.DEFINE_bool("distributed_auto", False, "Let JAX find the processes from the environment (TPU VM pods, "
                      "SLURM).", flag_values=fv)
    flags.DEFINE_integer("distributed_timeout_s", 100, "Multi-process: give up on a process that has not joined or "
                         "stopped answering.", flag_values=fv)
    flags.DEFINE_integer("cpu_devices", 0, "This many CPU devices per process (simulated meshes in tests); overrides "
                         "the config's mesh.cpu_devices.", flag_values=fv)


@dataclasses.dataclass(frozen=True)
class Command:
    summary: str  # one line, for `launch.py --help`
    run: Callable[..., None]  # run(parsed flags, *positional arguments)
    flag_definers: tuple[FlagDefiner, ...] = ()
    config: bool = False  # --config=FILE (required) and its --config.KEY=VALUE overrides
    args: tuple[str, ...] = ()  # positional arguments, by name for the usage line
    more_args: bool = False  # more positional arguments may follow (`tpu`: the launch.py command after --)
    usage: str = ""  # the required flags, for the usage line
    jax: bool = False  # runs JAX: distributed_flags, then joins the run and sets the CPU device count first

    def usage_line(self, name: str) -> str:
        return " ".join(["usage: python launch.py", name, *self.args, *([self.usage] if self.usage else []), "[flags]"])

    def flag_values(self, argv: list[str]) -> flags.FlagValues:
        """This command's flags; argv (the program, then the command's arguments) names the --config.KEY overrides."""
        fv = flags.FlagValues()
        if self.config:
            config_flags.DEFINE_config_file(
                "config", None, "Path of a Python config file (get_config(); 'file.py:arg' passes an argument); "
                "--config.KEY=VALUE then overrides one of its keys.", flag_values=fv, sys_argv=argv)
        for define in self.flag_definers + ((distributed_flags,) if self.jax else ()):
            define(fv)
        return fv


COMMANDS: dict[str, Command] = {}


def command(name: str, summary: str, *flag_definers: FlagDefiner, **options: Any) -> Callable:
    def register(run: Callable[..., None]) -> Callable[..., None]:
        COMMANDS[name] = Command(summary, run, flag_definers, **options)
        return run

    return register


STR, INT, FLOAT, BOOL = flags.DEFINE_string, flags.DEFINE_integer, flags.DEFINE_float, flags.DEFINE_bool


def _require(value: str | None, flag: str, command: str) -> str:
    if not value:
        raise UserError(f"`{command}` needs --{flag}")
    return value


def parse_profile_steps(text: str) -> tuple[int, int]:
    parts = text.replace(" ", "").split(",")
    if len(parts) != 2 or not all(p.isdigit() for p in parts) or not 0 < int(parts[0]) <= int(parts[1]):
        raise UserError(f"--profile_steps={text!r}: expected FIRST,LAST with 0 < FIRST <= LAST, e.g. 10,15")
    return int(parts[0]), int(parts[1])


# --- the commands ---------------------------------------------------------------------------------------------------


@command("pretrain", "Pretrain a model from a config (MLM, causal LM or span corruption); run again to resume.",
         _flag(STR, "workdir", None, "Work directory: checkpoints, logs, metrics, results.json."),
         _flag(STR, "profile_steps", "", "FIRST,LAST: a jax.profiler trace of those steps in workdir/profile, for "
               "TensorBoard (sets config.train.profile_steps)."),
         _flag(STR, "teacher", None, "General distillation: also learn this masked-LM run's predictions, with its "
               "tokenizer (sets config.distill.teacher)."),
         config=True, usage="--config=FILE --workdir=DIR [--teacher=RUN]", jax=True)
def pretrain_command(f: flags.FlagValues) -> None:
    config, workdir = f.config, _require(f.workdir, "workdir", "pretrain")
    if "task" in config:
        raise UserError("`pretrain` got a fine-tuning config (it has `task`); use `launch.py finetune`")
    if f.teacher is not None:
        config.distill.teacher = f.teacher
    if f.profile_steps:
        config.train.profile_steps = parse_profile_steps(f.profile_steps)
    results = _train(config, workdir)
    start, end = results.get("eval_at_start"), results.get("eval_at_end")
    if start and end:
        print(f"held-out {config.objective} token accuracy {start['accuracy']:.4f} -> {end['accuracy']:.4f}, "
              f"loss {start['loss']:.3f} -> {end['loss']:.3f}, perplexity {start['perplexity']:.1f} -> "
              f"{end['perplexity']:.1f} after {results['steps']} steps")
    if results.get("curves"):
        print(f"curves: {results['curves']}")


@command("finetune", "Fine-tune (classification, regression, QA, translation) from a config; run again to resume.",
         _flag(STR, "workdir", None, "Work directory: checkpoints, logs, metrics, results.json."),
         _flag(STR, "init", None, "Start from a pretraining run, a fine-tune of the same task (to train further or "
               "prune: config.prune.heads), a Hugging Face BERT directory or `minilm` (sets config.init)."),
         _flag(STR, "teacher", None, "Distill from this fine-tuned run: the loss also learns its outputs (sets "
               "config.distill.teacher; distill.alpha and distill.temperature weigh and soften them)."),
         config=True, usage="--config=FILE --workdir=DIR [--init=START] [--teacher=RUN]", jax=True)
def finetune_command(f: flags.FlagValues) -> None:
    from plm_jax.evaluate.tables import results_table

    config, workdir = f.config, _require(f.workdir, "workdir", "finetune")
    if "task" not in config:
        raise UserError("`finetune` got a pretraining config (it has no `task`); use `launch.py pretrain`")
    if f.init is not None:
        config.init = f.init
    if f.teacher is not None:
        if "distill" not in config:
            raise UserError(f"--teacher: task.kind={config.task.kind!r} has no distillation (its config has no "
                            "`distill`)")
        config.distill.teacher = f.teacher
    results = _train(config, workdir)
    if "interrupted_at" in results:
        print(f"interrupted at step {results['interrupted_at']}; run the same command to resume")
    else:
        print(results_table(results))


@command("tokenizer", "Train the SentencePiece model a config's text calls for.",
         _flag(STR, "output", None, "The model file to write."),
         _flag(BOOL, "overwrite", False, "Replace an existing model file."),
         config=True, usage="--config=FILE --output=FILE")
def tokenizer_command(f: flags.FlagValues) -> None:
    from plm_jax.data.tokenizer import train_tokenizer
    from plm_jax.tasks import task_class, task_name

    output = _require(f.output, "output", "tokenizer")
    if os.path.exists(output) and not f.overwrite:
        raise UserError(f"{output} exists; pass --overwrite to replace it")
    docs, pieces, options = task_class(task_name(f.config)).tokenizer_text(f.config)
    tok = train_tokenizer(docs, pieces, output, seed=f.config.seed, overwrite=f.overwrite, **options)
    print(f"wrote {output}: {tok.vocab_size} pieces, byte fallback {'on' if tok.byte_fallback else 'off'}")


@command("bench", "Train-step throughput, MFU, compile time and peak memory on synthetic batches (config.bench).",
         config=True, usage="--config=FILE", jax=True)
def bench_command(f: flags.FlagValues) -> None:
    from plm_jax.perf.bench import run_bench

    run_bench(f.config)


@command("compile-only", "Compile a config's train step without running it: memory per device, roofline (JSON).",
         _flag(STR, "target", None, "Compile for GPUs this host lacks: h100, h200 or a100, ':N' for N of them (needs "
               "JAX's CUDA plugin, not a GPU)."),
         config=True, usage="--config=FILE", jax=True)
def compile_only_command(f: flags.FlagValues) -> None:
    from plm_jax.perf.compile_only import compile_only

    devices = None
    if f.target:
        from plm_jax.parallel.gpu_targets import target_devices

        try:
            devices = target_devices(f.target)
        except (ValueError, RuntimeError) as err:
            raise UserError(str(err)) from err
    print(json.dumps(compile_only(f.config, devices)))


INT8_FLAG = _flag(BOOL, "int8", False, "Use int8 weights (per output channel), quantized once from the best "
                  "checkpoint and kept in best_int8/.")


@command("evaluate", "Score a fine-tune's best checkpoint on its eval/test splits (eval_results.json).",
         _flag(STR, "workdir", None, "The fine-tuning work directory."), INT8_FLAG, usage="--workdir=DIR [--int8]",
         jax=True)
def evaluate_command(f: flags.FlagValues) -> None:
    from plm_jax import inference
    from plm_jax.evaluate.tables import metrics_table

    workdir = _require(f.workdir, "workdir", "evaluate")
    results = inference.evaluate(workdir, int8=f.int8)
    print(metrics_table(results))
    if f.int8:
        size = results["_size_on_disk"]
        print(f"size on disk: best/ {size['float_bytes'] / 1e6:.2f} MB, best_int8/ {size['int8_bytes'] / 1e6:.2f} MB "
              f"({size['float_bytes'] / max(size['int8_bytes'], 1):.2f}x smaller)")
    print(f"written to {os.path.join(workdir, 'eval_results_int8.json' if f.int8 else 'eval_results.json')}")


@command("predict", "A fine-tune's predictions (labels, answers, translations) for a file of inputs.",
         _flag(STR, "workdir", None, "The fine-tuning work directory."),
         _flag(STR, "input", None, "Texts (.txt/.csv/.tsv/.jsonl), questions (.json/.jsonl) or sentences to "
               "translate (.txt)."),
         _flag(STR, "output", None, "Predictions: JSONL, or text for a translation run."), INT8_FLAG,
         usage="--workdir=DIR --input=FILE --output=FILE [--int8]", jax=True)
def predict_command(f: flags.FlagValues) -> None:
    from plm_jax import inference

    workdir = _require(f.workdir, "workdir", "predict")
    output, input_path = _require(f.output, "output", "predict"), _require(f.input, "input", "predict")
    n = inference.predict(workdir, input_path, output, int8=f.int8)
    print(f"wrote {n} predictions to {output}")


@command("generate", "Continue each line of a text file with a causal-LM pretraining run (JSONL samples).",
         _flag(STR, "workdir", None, "The causal-LM pretraining run."),
         _flag(STR, "input", None, "Prompts, one a line (an empty line starts a new document)."),
         _flag(STR, "output", None, "The JSONL samples: {\"prompt\", \"continuation\"} a line."),
         _flag(INT, "max_new_tokens", 64, "Tokens to generate per prompt."),
         _flag(FLOAT, "temperature", 0.8, "Sampling temperature; 0 = greedy."),
         _flag(INT, "top_k", 0, "Sample from the k most likely tokens; 0 = all."),
         _flag(FLOAT, "top_p", 0.95, "Nucleus sampling mass; 1 = off."),
         _flag(INT, "beam_size", 1, "Beam search with this many beams (> 1 ignores sampling)."),
         _flag(INT, "seed", 0, "Sampling seed."),
         usage="--workdir=DIR --input=FILE --output=FILE", jax=True)
def generate_command(f: flags.FlagValues) -> None:
    from plm_jax import inference

    workdir = _require(f.workdir, "workdir", "generate")
    output = _require(f.output, "output", "generate")
    n = inference.generate_samples(workdir, _require(f.input, "input", "generate"), output,
                                   max_new_tokens=f.max_new_tokens, temperature=f.temperature, top_k=f.top_k,
                                   top_p=f.top_p, beam_size=f.beam_size, seed=f.seed)
    print(f"wrote {n} samples to {output}")


@command("export", "Write a run as a Hugging Face BERT directory (loads with transformers' from_pretrained).",
         _flag(STR, "workdir", None, "A fine-tuning run (its best checkpoint) or an MLM pretraining run (latest)."),
         _flag(STR, "output", None, "The directory to write."), usage="--workdir=DIR --output=DIR", jax=True)
def export_command(f: flags.FlagValues) -> None:
    from plm_jax import inference

    workdir, output = _require(f.workdir, "workdir", "export"), _require(f.output, "output", "export")
    what = inference.export_hf(workdir, output)
    print(f"exported the {what} of {workdir} to {output} (loads with transformers' from_pretrained)")


@command("demo", "Pretrain for an hour, then learning curves against random init and MiniLM (plm_jax/demo.py).",
         _flag(STR, "workdir", None, "Work directory of the whole demo."),
         _flag(STR, "pretrained", None, "Reuse this pretraining run instead of pretraining the CPU-hour recipe."),
         _flag(STR, "tasks", "rotten_tomatoes,wiki_topics", "The curves' tasks (configs/sweeps/curve.py's)."),
         _flag(STR, "sizes", "100+1000+0", "Labeled examples per curve point, '+'-separated; 0 = all."),
         _flag(INT, "seeds", 3, "Seeds per point (each draws its own subset)."),
         _flag(BOOL, "minilm", True, "Also fine-tune the packaged all-MiniLM-L6-v2."),
         _flag(INT, "workers", 2, "Fine-tunes at once."),
         _flag(STR, "settings", "", "More curve settings, comma-separated key=value (configs/sweeps/curve.py)."),
         usage="--workdir=DIR", jax=True)
def demo_command(f: flags.FlagValues) -> None:
    from plm_jax.demo import run_demo

    tasks = [t.strip() for t in f.tasks.split(",") if t.strip()]
    run_demo(_require(f.workdir, "workdir", "demo"), pretrained=f.pretrained, tasks=tasks, sizes=f.sizes,
             seeds=f.seeds, minilm=f.minilm, workers=f.workers, settings=f.settings)


@command("wiki-qa", "Build a SQuAD-format QA set from Wikipedia article leads, offline.",
         _flag(STR, "output", None, "The directory to write."), usage="--output=DIR")
def wiki_qa_command(f: flags.FlagValues) -> None:
    from plm_jax.tasks.wiki_qa import build_wiki_qa

    out = build_wiki_qa(_require(f.output, "output", "wiki-qa"))
    print(f"wrote {out['train']} ({out['train_examples']} questions from {out['train_leads']} leads) and "
          f"{out['dev']} ({out['dev_examples']} from {out['dev_leads']})")


@command("bible", "Build aligned Bible verse pairs (split by book) and each language's training text.",
         _flag(STR, "output", None, "The directory to write."),
         _flag(STR, "versions", "k,e", "Source,target Bible versions (k KJV, 4 WEB, 3 BBE; l French Segond 1910; e "
               "German Elberfelder 1932)."),
         usage="--output=DIR")
def bible_command(f: flags.FlagValues) -> None:
    from plm_jax.data.corpora.bible import build_bible_corpus

    versions = f.versions.split(",")
    if len(versions) != 2:
        raise UserError(f"--versions={f.versions!r}: expected two codes, source,target (e.g. k,e)")
    print(json.dumps(build_bible_corpus(_require(f.output, "output", "bible"), *versions), indent=2))


@command("sweep", "Run every stage of a sweep config, each in its own process; run again to resume.",
         _flag(STR, "workdir", None, "The sweep's directory."),
         _flag(INT, "workers", 1, "Stages run side by side (one process each)."),
         _flag(STR, "worker_devices", "", "CUDA_VISIBLE_DEVICES per worker, groups separated by ';' (e.g. '0,1;2,3' "
               "for --workers=2)."),
         args=("<sweep config .py>",), usage="--workdir=DIR")
def sweep_command(f: flags.FlagValues, sweep_config: str) -> None:
    from plm_jax.sweep.runner import run_sweep

    result = run_sweep(sweep_config, _require(f.workdir, "workdir", "sweep"), f.workers, f.worker_devices)
    if result["interrupted"]:
        sys.exit(1)


@command("report", "Tabulate and plot a sweep's results: report.md, results.csv, plots/.", args=("<sweep dir>",))
def report_command(f: flags.FlagValues, sweep_dir: str) -> None:
    from plm_jax.sweep.report import write_report

    if not os.path.isfile(os.path.join(sweep_dir, "sweep.json")):
        raise UserError(f"{sweep_dir} is not a sweep directory (no sweep.json); run `launch.py sweep` first")
    out = write_report(sweep_dir)
    print(f"wrote {out['report']}" + (f" and {out['csv']}" if out.get("csv") else ""))


@command("tpu", "A Cloud TPU VM slice via gcloud: create, run (-- a launch.py command on all hosts), delete, ssh.",
         _flag(STR, "name", None, "The TPU VM (slice) name."),
         _flag(STR, "zone", None, "Its zone, e.g. us-west4-a."),
         _flag(STR, "type", "v5litepod-16", "Accelerator type."),
         _flag(STR, "runtime_version", "v2-alpha-tpuv5-lite", "TPU VM software version."),
         _flag(STR, "project", None, "Google Cloud project (default: gcloud's)."),
         _flag(BOOL, "spot", False, "Create a Spot (preemptible) slice."),
         _flag(INT, "retries", 3, "`tpu run`: recreate a preempted slice this many times."),
         _flag(BOOL, "dry_run", False, "Print the gcloud commands instead of running them."),
         args=("{create|run|delete|ssh}",), more_args=True, usage="--name=NAME --zone=ZONE [-- launch.py args]")
def tpu_command(f: flags.FlagValues, verb: str, *launch_args: str) -> None:
    from plm_jax.cloud import tpu_vm

    vm = tpu_vm.TpuVm(name=_require(f.name, "name", "tpu"), zone=_require(f.zone, "zone", "tpu"),
                      accelerator_type=f.type, runtime_version=f.runtime_version, project=f.project, spot=f.spot)
    sys.exit(tpu_vm.main(verb, vm, list(launch_args), dry_run=f.dry_run, retries=f.retries))


# --- parsing and running --------------------------------------------------------------------------------------------


def config_cpu_devices(command: str, config: Any = None) -> int:
    """The run's `mesh.cpu_devices`, resolved for this host (parallel/distributed.py); 0 without a config."""
    from plm_jax.parallel.distributed import config_cpu_device_count

    configs = [] if config is None else [config]
    if command == "demo":
        from plm_jax.demo import demo_configs

        configs = demo_configs()
    return config_cpu_device_count(configs)


def _start_jax(command: str, f: flags.FlagValues) -> None:
    """Before the first JAX operation: --target's CPU platform, then the CPU device count and jax.distributed."""
    from plm_jax.parallel import distributed

    if "target" in f and f.target:  # the GPU target's devices are compile-only: the host runs on its CPU
        import jax

        jax.config.update("jax_platforms", "cpu")
    cpu_devices = f.cpu_devices or config_cpu_devices(command, f.config if "config" in f else None)
    distributed.initialize(f.coordinator, f.num_processes, f.process_id, auto=f.distributed_auto,
                           cpu_devices=cpu_devices, timeout_s=f.distributed_timeout_s)


def _parse_flags(fv: flags.FlagValues, command: str, argv: list[str]) -> list[str]:
    """absl parsing of one command's flags, with one-line errors; the positional arguments."""
    try:
        positional = fv(argv)[1:]
        if "config" in fv and fv.config is not None:
            fv.config.keys()  # config_flags defers a file that failed to load to first use
            from plm_jax.config_base import split_list_overrides

            split_list_overrides(fv.config, argv)
        return positional
    except flags.UnrecognizedFlagError as e:
        name = e.flagname
        if name.startswith("config.") and "config" in fv:
            raise UserError(f"--{name}: a --config.KEY=VALUE override needs --config=FILE before it") from None
        if (name == "config" or name.startswith("config.")) and "config" not in fv:
            raise UserError(f"`{command}` takes no --config"
                            + (f" (its {COMMANDS[command].args[0]} is a positional argument)"
                               if COMMANDS[command].args else "")) from None
        hint = re.search(r"Did you mean: (.*?) ?\?", str(e))
        raise UserError(f"unknown flag --{name} for `{command}`" + (f" (did you mean --{hint[1]}?)" if hint else "")
                        + f"; `python launch.py {command} --help` lists its flags") from None
    except flags.Error as e:
        raise UserError(str(e).splitlines()[0]) from None
    except OSError as e:  # the config file is missing or does not load
        raise UserError(" ".join(str(e).split())) from None
    except (AttributeError, KeyError) as e:  # ml_collections: an override names a key the config lacks
        detail = str(e).strip("'\"").replace("\\'", "'").replace("\\n", " ")
        keys = [a.split("=")[0] for a in argv if a.startswith("--config.")]
        bad = [k for k in keys if any(f"'{part}'" in detail for part in k.split(".")[1:])]
        raise UserError(f"unknown config key {bad[0] if bad else ''} ({detail})") from None


def commands_help() -> str:
    width = max(len(name) for name in COMMANDS) + 2
    lines = ["usage: python launch.py COMMAND [flags]   (python launch.py COMMAND --help: its flags)", "", "commands:"]
    lines += [f"  {name:<{width}}{c.summary}" for name, c in COMMANDS.items()]
    return "\n".join(lines)


def command_help(name: str, fv: flags.FlagValues) -> str:
    lines = [COMMANDS[name].usage_line(name), COMMANDS[name].summary, "", "flags:"]
    for flag in (fv[n] for n in fv if "." not in n):  # not the --config.KEY overrides
        default = repr(flag.default) if isinstance(flag.default, str) else str(flag.default)
        default = default.lower() if flag.default is None or isinstance(flag.default, bool) else default
        lines.append(f"  --{'[no]' if flag.boolean else ''}{flag.name} (default: {default})")
        lines += textwrap.wrap(flag.help, 100, initial_indent=" " * 6, subsequent_indent=" " * 6)
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    name, rest = (argv[1], argv[2:]) if len(argv) > 1 else (None, [])
    if name in ("--help", "-h", "help"):
        print(commands_help())
        return
    if name is None:
        print(commands_help(), file=sys.stderr)
        sys.exit(2)

    try:
        if name not in COMMANDS:
            raise UserError(f"unknown command {name!r}; `python launch.py --help` lists the commands")
        command = COMMANDS[name]
        fv = command.flag_values([argv[0], *rest])
        own = rest[:rest.index("--")] if "--" in rest else rest  # what follows -- is another command's (`tpu run`)
        if "--help" in own or "-h" in own or "--helpfull" in own:
            print(command_help(name, fv))
            return
        positional = _parse_flags(fv, name, [f"{argv[0]} {name}", *rest])
        if len(positional) < len(command.args) or (len(positional) > len(command.args) and not command.more_args):
            raise UserError(f"`{name}` takes {len(command.args) or 'no'} positional argument"
                            f"{'' if len(command.args) == 1 else 's'}, got {positional}; "
                            f"{command.usage_line(name).removeprefix('usage: ')}")
        if command.config and fv.config is None:
            raise UserError(f"`{name}` needs --config=<path to a config .py file>")
        flags.FLAGS.mark_as_parsed()  # absl's own flags keep their defaults (absl logging checks they are parsed)
        absl_logging.set_verbosity(absl_logging.WARNING)  # Orbax and JAX narrate every save at INFO
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname).1s %(name)s] %(message)s",
                            datefmt="%H:%M:%S")
        logging.getLogger("plm_jax").setLevel(logging.INFO)
        from plm_jax import quiet_orbax

        quiet_orbax.install()  # a failed save is one CheckpointSaveError line, not a traceback per writer thread
        if command.jax:
            _start_jax(name, fv)
        command.run(fv, *positional)
    except USER_ERRORS as e:
        if os.environ.get("PLM_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        if type(e).__name__ == "CheckpointSaveError":  # Orbax's writer threads may never finish: leave now
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)
        sys.exit(2)


if __name__ == "__main__":
    main(sys.argv)
