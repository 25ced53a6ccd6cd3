"""The floor a translation model must clear: the BLEU and chrF of copying each source sentence unchanged.

Names, numbers and cognates shared by the two languages score above zero without any translation, so a model's
BLEU means something only beside this number. Reads the pairs through the translation config's own loader.

    python benchmarks/translation_floor.py configs/translate/bible.py:de [--split test]
"""

from __future__ import annotations

import argparse
import json

from plm_jax.evaluate.bleu import corpus_scores
from plm_jax.sweep.spec import load_python_config
from plm_jax.tasks.translation import load_pairs


def copy_source_scores(config_spec: str, split: str = "test") -> dict:
    config = load_python_config(config_spec)
    pairs = load_pairs(config.task, split, int(config.seed))
    scores = corpus_scores([p.source for p in pairs], [p.target for p in pairs])
    return {"config": config_spec, "split": split, "bleu": scores["bleu"], "chrf": scores["chrf"],
            "sentences": scores["sentences"], "bleu_signature": scores["bleu_signature"],
            "chrf_signature": scores["chrf_signature"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="a translation config, e.g. configs/translate/bible.py:de")
    parser.add_argument("--split", default="test", choices=("train", "eval", "test"))
    args = parser.parse_args()
    print(json.dumps(copy_source_scores(args.config, args.split), indent=2))


if __name__ == "__main__":
    main()
