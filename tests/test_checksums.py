"""train/checksums.py on a made-up step directory: every fault the damaged-checkpoint tests use is found."""

import os

from plm_jax.train import checksums


def test_each_kind_of_damage_is_named(tmp_path):
    step = tmp_path / "12"
    (step / "state").mkdir(parents=True)
    (step / "state" / "array").write_bytes(bytes(range(256)) * 8)
    (step / "data.json").write_text('{"step": 12}')
    assert checksums.damage(str(step)) is None  # not sealed yet: nothing to check
    assert checksums.write_checksums(str(step)) == 2048 + 12
    assert checksums.damage(str(step)) == ""
    array = step / "state" / "array"
    good = array.read_bytes()
    array.write_bytes(good[:100])
    assert checksums.damage(str(step)) == f"{os.path.join('state', 'array')} has 100 bytes, 2048 were saved"
    array.write_bytes(good[:1000] + bytes([good[1000] ^ 1]) + good[1001:])
    assert "does not match its checksum" in checksums.damage(str(step))
    array.write_bytes(good)
    (step / "data.json").unlink()
    assert checksums.damage(str(step)) == "data.json is missing"
    (step / checksums.CHECKSUM_FILE).write_text("{")
    assert "checksum file is unreadable" in checksums.damage(str(step))
