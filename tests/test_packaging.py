"""pyproject.toml and the requirements files agree: one set of pins for the runtime, the dev tools and jax."""

import os
import re
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def requirement_lines(name):
    with open(os.path.join(ROOT, name)) as f:
        return [line.strip() for line in f if line.strip() and not line.strip().startswith("#")]


def test_extras_pin_what_the_requirements_files_pin():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)
    assert project["tool"]["setuptools"]["dynamic"]["dependencies"] == {"file": ["requirements.txt"]}
    extras = project["project"]["optional-dependencies"]
    dev = requirement_lines("requirements-dev.txt")
    assert dev[0] == "-r requirements.txt"
    assert extras["dev"] == dev[1:]
    runtime = requirement_lines("requirements.txt")
    assert not [line for line in runtime if line.startswith("-")], "requirements.txt is read by setuptools: no options"
    jax = next(line for line in runtime if line.startswith("jax=="))
    assert extras["gpu"] == [jax.replace("jax==", "jax[cuda12]==")]
    assert extras["tpu"] == [jax.replace("jax==", "jax[tpu]==")]
    pinned = re.compile(r"[A-Za-z0-9_.\-]+(\[[a-z0-9,]+\])?==[0-9][0-9A-Za-z.]*")
    assert [line for line in runtime + dev[1:] if not pinned.fullmatch(line)] == []
