"""plm_jax's one command line.

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
    python launch.py demo      --workdir runs/demo [--pretrained runs/quickstart]
    python launch.py wiki-qa   --output runs/wiki_qa                   # a SQuAD-format QA set from Wikipedia leads
    python launch.py bible     --output data/bible_en_de --versions k,e  # aligned verse pairs, split by book
    python launch.py finetune  --config configs/translate/bible_en_de.py --workdir runs/en_de   # BLEU, beam search
    python launch.py predict   --workdir runs/en_de --input sentences.txt --output translations.txt
    python launch.py generate  --workdir runs/gpt --input prompts.txt --output samples.jsonl  # a causal-LM run
    python launch.py sweep     configs/sweeps/mask_rate.py --workdir runs/mask_rate [--workers=2]  # ablations
    python launch.py report    runs/mask_rate                          # report.md, results.csv, plots/
    python launch.py tpu run --name=my-v5e --zone=us-west4-a --type=v5litepod-16 [--dry_run] \
        -- pretrain --config configs/quickstart.py --workdir /mnt/bucket/run

Errors that come from the user's input (config, files, checkpoints) are printed as one line, exit status 2.
"""

from __future__ import annotations

import json
import logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter hides real messages

if __name__ == "__main__":  # first: glibc reads its malloc tunables only at start-up (plm_jax/huge_pages.py)
    from plm_jax.huge_pages import reexec_with_huge_pages

    reexec_with_huge_pages()

from absl import flags  # noqa: E402
from absl import logging as absl_logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

COMMANDS = ("pretrain", "tokenizer", "bench", "compile-only", "finetune", "evaluate", "predict", "export", "demo",
            "wiki-qa", "bible", "generate")
# these read the work directory's saved config (or need none)
NO_CONFIG = ("evaluate", "predict", "export", "demo", "wiki-qa", "bible", "generate")

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path of a Python config file (get_config()).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Work directory: checkpoints, logs, metrics (pretrain).")
_OUTPUT = flags.DEFINE_string("output", None, "`tokenizer`: the model file; `predict`: the JSONL; `export`: a dir.")
_INIT = flags.DEFINE_string("init", None, "`finetune`: start from a pretraining run, a Hugging Face BERT directory "
                            "or `minilm` (sets config.init).")
_INPUT = flags.DEFINE_string("input", None, "`predict`: texts (.txt/.csv/.tsv/.jsonl) or questions (.json/.jsonl).")
_PRETRAINED = flags.DEFINE_string("pretrained", None, "`demo`: reuse this pretraining run instead of pretraining.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "`tokenizer`: replace an existing model file.")
_VERSIONS = flags.DEFINE_string("versions", "k,e", "`bible`: source,target Bible versions (k KJV, 4 WEB, 3 BBE; "
                                "l French Segond 1910; e German Elberfelder 1932).")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 64, "`generate`: tokens to generate per prompt.")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.8, "`generate`: sampling temperature; 0 = greedy.")
_TOP_K = flags.DEFINE_integer("top_k", 0, "`generate`: sample from the k most likely tokens; 0 = all.")
_TOP_P = flags.DEFINE_float("top_p", 0.95, "`generate`: nucleus sampling mass; 1 = off.")
_BEAM = flags.DEFINE_integer("beam_size", 1, "`generate`: beam search with this many beams (> 1 ignores sampling).")
_SEED = flags.DEFINE_integer("seed", 0, "`generate`: sampling seed.")
_COORDINATOR = flags.DEFINE_string("coordinator", None, "Multi-process: host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 1, "Multi-process: how many processes in all.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-process: this process's index.")
_DISTRIBUTED_AUTO = flags.DEFINE_bool("distributed_auto", False,
                                      "Let JAX find the processes from the environment (TPU VM pods, SLURM).")
_DIST_TIMEOUT = flags.DEFINE_integer("distributed_timeout_s", 100,
                                     "Multi-process: give up on a process that has not joined or stopped answering.")
_TPU_NAME = flags.DEFINE_string("name", None, "`tpu`: the TPU VM (slice) name.")
_TPU_ZONE = flags.DEFINE_string("zone", None, "`tpu`: its zone, e.g. us-west4-a.")
_TPU_TYPE = flags.DEFINE_string("type", "v5litepod-16", "`tpu`: accelerator type.")
_TPU_RUNTIME = flags.DEFINE_string("runtime_version", "v2-alpha-tpuv5-lite", "`tpu`: TPU VM software version.")
_TPU_PROJECT = flags.DEFINE_string("project", None, "`tpu`: Google Cloud project (default: gcloud's).")
_TPU_SPOT = flags.DEFINE_bool("spot", False, "`tpu`: create a Spot (preemptible) slice.")
_TPU_RETRIES = flags.DEFINE_integer("retries", 3, "`tpu run`: recreate a preempted slice this many times.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "`tpu`: print the gcloud commands instead of running them.")
_WORKERS = flags.DEFINE_integer("workers", 1, "`sweep`: stages run side by side (one process each).")
_WORKER_DEVICES = flags.DEFINE_string("worker_devices", "", "`sweep`: CUDA_VISIBLE_DEVICES per worker, "
                                      "groups separated by ';' (e.g. '0,1;2,3' for --workers=2).")
_PROFILE = flags.DEFINE_string("profile_steps", "", "`pretrain`: FIRST,LAST: a jax.profiler trace of those steps "
                               "in workdir/profile, for TensorBoard (sets config.train.profile_steps).")
_TARGET = flags.DEFINE_string("target", None, "`compile-only`: compile for GPUs this host lacks: h100, h200 or a100, "
                              "':N' for N of them (needs JAX's CUDA plugin, not a GPU).")
_CPU_DEVICES = flags.DEFINE_integer("cpu_devices", 0, "This many CPU devices per process (simulated meshes in tests); "
                                    "overrides the config's mesh.cpu_devices.")


class UserError(Exception):
    """A problem with the user's input; printed without a traceback."""


def _require(value: str | None, flag: str, command: str) -> str:
    if not value:
        raise UserError(f"`{command}` needs --{flag}")
    return value


def parse_profile_steps(text: str) -> tuple[int, int]:
    parts = text.replace(" ", "").split(",")
    if len(parts) != 2 or not all(p.isdigit() for p in parts) or not 0 < int(parts[0]) <= int(parts[1]):
        raise UserError(f"--profile_steps={text!r}: expected FIRST,LAST with 0 < FIRST <= LAST, e.g. 10,15")
    return int(parts[0]), int(parts[1])


def run(command: str) -> None:
    config = _CONFIG.value
    if command in NO_CONFIG:
        return run_workdir_command(command)
    if config is None:
        raise UserError(f"`{command}` needs --config=<path to a config .py file>")
    if command == "pretrain":
        from plm_jax.train.pretrain import pretrain

        if _PROFILE.value:
            config.train.profile_steps = parse_profile_steps(_PROFILE.value)

        results = pretrain(config, _require(_WORKDIR.value, "workdir", command))
        start, end = results.get("eval_at_start"), results.get("eval_at_end")
        if start and end:
            print(f"held-out {config.objective} token accuracy {start['accuracy']:.4f} -> {end['accuracy']:.4f}, "
                  f"loss {start['loss']:.3f} -> {end['loss']:.3f}, perplexity {start['perplexity']:.1f} -> "
                  f"{end['perplexity']:.1f} after {results['steps']} steps")
        if results.get("curves"):
            print(f"curves: {results['curves']}")
    elif command == "tokenizer":
        from plm_jax.data import sources
        from plm_jax.data.tokenizer import train_tokenizer

        output = _require(_OUTPUT.value, "output", command)
        if os.path.exists(output) and not _OVERWRITE.value:
            raise UserError(f"{output} exists; pass --overwrite to replace it")
        if "task" in config and config.task.get("kind") == "translation":  # one vocabulary for both languages
            from plm_jax.tasks.translation import iter_tokenizer_text

            docs, pieces = iter_tokenizer_text(config.task), config.model.vocab_size
        else:
            from plm_jax.train.pretrain import tokenizer_pieces

            docs = sources.iter_documents(config.data, "train", config.data.tokenizer_max_docs)
            pieces = tokenizer_pieces(config)
        tok = train_tokenizer(docs, pieces, output, seed=config.seed, overwrite=_OVERWRITE.value)
        print(f"wrote {output}: {tok.vocab_size} pieces")
    elif command == "bench":
        from plm_jax.train.bench import run_bench

        run_bench(config)
    elif command == "compile-only":
        from plm_jax.train.setup import compile_only

        devices = None
        if _TARGET.value:
            from plm_jax.parallel.gpu_targets import target_devices

            try:
                devices = target_devices(_TARGET.value)
            except (ValueError, RuntimeError) as err:
                raise UserError(str(err)) from err
        print(json.dumps(compile_only(config, devices)))
    elif command == "finetune":
        from plm_jax.train.finetune import finetune
        from plm_jax.train.report import results_table

        if _INIT.value is not None:
            config.init = _INIT.value
        if config.task.get("kind") == "translation":
            from plm_jax.train.translate import finetune_translation as finetune
        results = finetune(config, _require(_WORKDIR.value, "workdir", command))
        if "interrupted_at" in results:
            print(f"interrupted at step {results['interrupted_at']}; run the same command to resume")
        else:
            print(results_table(results))


def config_cpu_devices(command: str) -> int:
    """The run's `mesh.cpu_devices`, resolved for this host (parallel/distributed.py); 0 without a config."""
    from plm_jax.parallel.distributed import config_cpu_device_count

    configs = [] if _CONFIG.value is None else [_CONFIG.value]
    if command == "demo":
        from plm_jax.demo import demo_configs

        configs = demo_configs()
    return config_cpu_device_count(configs)


def run_workdir_command(command: str) -> None:
    from plm_jax.train import inference
    from plm_jax.train.report import metrics_table

    if command == "wiki-qa":
        from plm_jax.tasks.wiki_qa import build_wiki_qa

        out = build_wiki_qa(_require(_OUTPUT.value, "output", command))
        print(f"wrote {out['train']} ({out['train_examples']} questions from {out['train_leads']} leads) and "
              f"{out['dev']} ({out['dev_examples']} from {out['dev_leads']})")
        return
    if command == "bible":
        from plm_jax.data.corpora.bible import build_bible_pairs

        versions = _VERSIONS.value.split(",")
        if len(versions) != 2:
            raise UserError(f"--versions={_VERSIONS.value!r}: expected two codes, source,target (e.g. k,e)")
        output = _require(_OUTPUT.value, "output", command)
        stats = build_bible_pairs(output, versions[0], versions[1])
        _write_monolingual(output)
        print(json.dumps(stats, indent=2))
        return
    workdir = _require(_WORKDIR.value, "workdir", command)
    if command == "generate":
        n = inference.generate_samples(workdir, _require(_INPUT.value, "input", command),
                                       _require(_OUTPUT.value, "output", command), max_new_tokens=_MAX_NEW.value,
                                       temperature=_TEMPERATURE.value, top_k=_TOP_K.value, top_p=_TOP_P.value,
                                       beam_size=_BEAM.value, seed=_SEED.value)
        print(f"wrote {n} samples to {_OUTPUT.value}")
        return
    if command == "evaluate":
        results = inference.evaluate(workdir)
        print(metrics_table(results))
        print(f"written to {os.path.join(workdir, 'eval_results.json')}")
    elif command == "predict":
        output = _require(_OUTPUT.value, "output", command)
        input_path = _require(_INPUT.value, "input", command)  # flags first, then the work directory
        if inference.run_kind(workdir) == "translation":
            from plm_jax.train.translate import predict_translations

            n = predict_translations(workdir, input_path, output)
            print(f"wrote {n} translations to {output}")
            return
        n = inference.predict(workdir, input_path, output)
        print(f"wrote {n} predictions to {output}")
    elif command == "export":
        output = _require(_OUTPUT.value, "output", command)
        what = inference.export_hf(workdir, output)
        print(f"exported the {what} of {workdir} to {output} (loads with transformers' from_pretrained)")
    elif command == "demo":
        from plm_jax.demo import run_demo

        run_demo(workdir, pretrained=_PRETRAINED.value)


def _write_monolingual(folder: str) -> None:
    """train.<lang>.txt, one training verse per line per language: text for pretraining and the vocabulary."""
    from plm_jax.files import write_atomic

    with open(os.path.join(folder, "stats.json"), encoding="utf-8") as f:
        stats = json.load(f)
    langs = (stats["source_language"], stats["target_language"])
    with open(os.path.join(folder, "train.tsv"), encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    for i, lang in enumerate(langs):
        write_atomic(os.path.join(folder, f"train.{lang}.txt"), "".join(r[i] + "\n" for r in rows))


def run_sweep_command(command: str, target: str) -> None:
    """`sweep <sweep config> --workdir DIR` and `report DIR`: they take a positional argument."""
    if command == "sweep":
        from plm_jax.sweep.runner import run_sweep

        result = run_sweep(target, _require(_WORKDIR.value, "workdir", command), _WORKERS.value,
                           _WORKER_DEVICES.value)
        if result["interrupted"]:
            sys.exit(1)
        return
    from plm_jax.sweep.report import write_report

    if not os.path.isfile(os.path.join(target, "sweep.json")):
        raise UserError(f"{target} is not a sweep directory (no sweep.json); run `launch.py sweep` first")
    out = write_report(target)
    print(f"wrote {out['report']}" + (f" and {out['csv']}" if out.get("csv") else ""))


def run_tpu(verb: str, launch_args: list[str]) -> int:
    from plm_jax.cloud import tpu_vm

    vm = tpu_vm.TpuVm(name=_require(_TPU_NAME.value, "name", "tpu"), zone=_require(_TPU_ZONE.value, "zone", "tpu"),
                      accelerator_type=_TPU_TYPE.value, runtime_version=_TPU_RUNTIME.value,
                      project=_TPU_PROJECT.value, spot=_TPU_SPOT.value)
    return tpu_vm.main(verb, vm, launch_args, dry_run=_DRY_RUN.value, retries=_TPU_RETRIES.value)


def main(argv: list[str]) -> None:
    args = [a for a in argv[1:]]
    if args[:1] == ["tpu"] and len(args) >= 2:  # tpu create|run|delete|ssh [-- launch.py arguments]
        try:
            sys.exit(run_tpu(args[1], args[2:]))
        except (UserError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
    if args[:1] in (["sweep"], ["report"]):
        if len(args) != 2:
            print(f"usage: python launch.py {args[0]} {'<sweep config .py>' if args[0] == 'sweep' else '<sweep dir>'}"
                  f"{' --workdir=DIR' if args[0] == 'sweep' else ''}   (got {args})", file=sys.stderr)
            sys.exit(2)
        if _CONFIG.value is not None:
            print(f"error: `{args[0]}` takes the sweep {'config' if args[0] == 'sweep' else 'directory'} as a "
                  "positional argument, not --config", file=sys.stderr)
            sys.exit(2)
    elif len(args) != 1 or args[0] not in COMMANDS:
        print(f"usage: python launch.py {{{'|'.join(COMMANDS)}}} --config=… [flags]\n"
              f"       python launch.py sweep <sweep config .py> --workdir=DIR  |  report <sweep dir>\n"
              f"       python launch.py tpu {{create|run|delete|ssh}} --name=… --zone=… [-- launch.py args]"
              f"   (got {args})", file=sys.stderr)
        sys.exit(2)
    absl_logging.set_verbosity(absl_logging.WARNING)  # Orbax and JAX narrate every save at INFO
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname).1s %(name)s] %(message)s",
                        datefmt="%H:%M:%S")
    logging.getLogger("plm_jax").setLevel(logging.INFO)
    from plm_jax.errors import USER_ERRORS
    from plm_jax.parallel import distributed

    if _TARGET.value:  # the GPU target's devices are compile-only: the host runs on its CPU, whatever plugins say
        import jax

        jax.config.update("jax_platforms", "cpu")
    try:
        cpu_devices = _CPU_DEVICES.value or config_cpu_devices(args[0])
        distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                               auto=_DISTRIBUTED_AUTO.value, cpu_devices=cpu_devices, timeout_s=_DIST_TIMEOUT.value)
        if args[0] in ("sweep", "report"):
            run_sweep_command(args[0], args[1])
        else:
            run(args[0])
    except (UserError, *USER_ERRORS) as e:
        if os.environ.get("PLM_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def _parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing with one-line errors for an unknown `--config.x.y` key or a bad value."""
    try:
        remaining = flags.FLAGS(argv)
        if _CONFIG.value is not None:
            _CONFIG.value.keys()  # config_flags defers a file that failed to load to first use
        return remaining
    except flags.Error as e:
        raise UserError(str(e).splitlines()[0]) from None
    except OSError as e:  # the config file is missing or does not load
        raise UserError(" ".join(str(e).split())) from None
    except (AttributeError, KeyError) as e:  # ml_collections: an override names a key the config lacks
        detail = str(e).strip("'\"").replace("\\'", "'").replace("\\n", " ")
        keys = [a.split("=")[0] for a in argv if a.startswith("--config.")]
        bad = [k for k in keys if any(f"'{part}'" in detail for part in k.split(".")[1:])]
        raise UserError(f"unknown config key {bad[0] if bad else ''} ({detail})") from None


if __name__ == "__main__":
    try:
        remaining = _parse_flags(sys.argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    main(remaining)
