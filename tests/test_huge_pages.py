"""launch.py re-executes itself once with glibc's transparent-huge-page malloc tunable (plm_jax/huge_pages.py)."""

import os
import subprocess
import sys

import pytest

from plm_jax import huge_pages


def test_environment_gains_the_tunable_once_and_keeps_the_users():
    env = huge_pages.environment_with_huge_pages({"PATH": "/bin"})
    assert env == {"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
    env = huge_pages.environment_with_huge_pages({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
    assert huge_pages.environment_with_huge_pages({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}) is None  # user's
    assert huge_pages.environment_with_huge_pages({"PLM_JAX_HUGE_PAGES": "0"}) is None


def test_thp_setting_is_read_from_the_kernel_file(tmp_path):
    path = tmp_path / "enabled"
    path.write_text("always [madvise] never\n")
    assert huge_pages._thp_available(str(path))
    path.write_text("always madvise [never]\n")
    assert not huge_pages._thp_available(str(path))
    assert not huge_pages._thp_available(str(tmp_path / "missing"))


@pytest.mark.skipif(not (huge_pages._glibc_has_tunable() and huge_pages._thp_available()),
                    reason="needs glibc >= 2.35 and transparent huge pages")
@pytest.mark.parametrize("opt_out", ["", "0"])
def test_launch_reexecutes_with_the_tunable_and_the_same_arguments(tmp_path, opt_out):
    script = tmp_path / "child.py"
    script.write_text(
        "import os, sys\n"
        "from plm_jax.huge_pages import reexec_with_huge_pages\n"
        "print('start', flush=True)\n"
        "reexec_with_huge_pages()\n"
        "print(os.environ.get('GLIBC_TUNABLES', ''), sys.argv[1:])\n")
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "PLM_JAX_HUGE_PAGES")}
    if opt_out:
        env["PLM_JAX_HUGE_PAGES"] = opt_out
    out = subprocess.run([sys.executable, str(script), "--flag=a b"], env=env, capture_output=True, text=True,
                         check=True).stdout.splitlines()
    if opt_out:
        assert out == ["start", " ['--flag=a b']"]
    else:  # started twice, the second time with the tunable
        assert out == ["start", "start", "glibc.malloc.hugetlb=1 ['--flag=a b']"]
