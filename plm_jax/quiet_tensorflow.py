"""Keeps TensorFlow's C++ start-up lines (oneDNN notes, CUDA probes) off stderr; `launch.py` installs it.

TensorFlow uses tf.data here, on the CPU, yet `import tensorflow` prints, through absl before any log level
applies (TF_CPP_MIN_LOG_LEVEL hides none of them), lines such as

    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    I0000 ... port.cc:153] oneDNN custom operations are on. ...
    I0000 ... cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.

twice (two libraries), and on a host with JAX's CUDA plugin "Unable to register cuDNN factory" errors. `install()`
runs the first `import tensorflow` with stderr (the file descriptor, as C++ writes it) sent to a temporary file,
then writes back every line but those. (The "failed call to cuInit" ERROR of the first TensorFlow op on a host
without an NVIDIA GPU comes later; TF_CPP_MIN_LOG_LEVEL=3 hides it: see launch.py.)
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile
from collections.abc import Iterator

NOISE = re.compile(
    rb"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|\] oneDNN custom operations are on\."
    rb"|\] Could not find cuda drivers on your machine"
    rb"|\] Unable to register cu(DNN|FFT|BLAS) factory"
    rb"|\] computation placer already registered"
    rb"|\] failed call to cuInit"
    rb"|TF-TRT Warning: Could not find TensorRT"
    rb"|\] This TensorFlow binary is optimized to use available CPU instructions"
    rb"|^To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags")


def install() -> None:
    """Filters the first `import tensorflow` from now on (nothing if it was imported already)."""
    if "tensorflow" not in sys.modules and not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())


@contextlib.contextmanager
def stderr_without(noise: re.Pattern[bytes] = NOISE) -> Iterator[None]:
    """Everything written to file descriptor 2 inside the block, less the lines `noise` matches, after it."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [line for line in tmp.read().splitlines(keepends=True) if not noise.search(line)]
            if kept:
                os.write(2, b"".join(kept))


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once; the other finders locate the package
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader)
        return spec


class _Loader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        module.__loader__ = module.__spec__.loader = self.loader  # the module keeps its own loader
        with stderr_without():
            self.loader.exec_module(module)
