"""Checksums of a saved checkpoint's files, written once Orbax has committed the step and checked before a restore:
a truncated, deleted or bit-flipped file is found before any array is read.

File-level rather than array-level: it covers Orbax's array files, its manifests and the data position alike, and
needs no device-to-host copy of the arrays. CRC-32 rather than a cryptographic hash: it finds accidental damage
(every burst of up to 32 bits, anything else but 1 in 2^32) at ~6x BLAKE2's speed (1.1 against 0.19 GB/s, measured
side by side on 2 busy cores, 2026-12-07); nothing here defends against a forger.
"""

from __future__ import annotations

import json
import os
import zlib

CHECKSUM_FILE = "plm_checksums.json"
_CHUNK = 1 << 22


def _files(step_dir: str) -> list[str]:
    out = []
    for root, _, names in os.walk(step_dir):
        for name in names:
            path = os.path.join(root, name)
            if name != CHECKSUM_FILE:
                out.append(os.path.relpath(path, step_dir))
    return sorted(out)


def file_digest(path: str) -> str:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return f"{crc:08x}"


def write_checksums(step_dir: str) -> int:
    """Writes the size and digest of every file of a committed step; returns the bytes hashed."""
    files = {}
    for rel in _files(step_dir):
        path = os.path.join(step_dir, rel)
        files[rel] = {"size": os.path.getsize(path), "crc32": file_digest(path)}
    tmp = os.path.join(step_dir, f".{CHECKSUM_FILE}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"files": files}, f, indent=0, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(step_dir, CHECKSUM_FILE))
    return sum(v["size"] for v in files.values())


def has_checksums(step_dir: str) -> bool:
    return os.path.isfile(os.path.join(step_dir, CHECKSUM_FILE))


def damage(step_dir: str) -> str | None:
    """What is wrong with a step's files ("" when nothing is), or None when it has no checksums to check."""
    path = os.path.join(step_dir, CHECKSUM_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            expected = json.load(f)["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"its checksum file is unreadable ({type(e).__name__})"
    for rel, want in expected.items():
        file = os.path.join(step_dir, rel)
        if not os.path.isfile(file):
            return f"{rel} is missing"
        size = os.path.getsize(file)
        if size != want["size"]:
            return f"{rel} has {size} bytes, {want['size']} were saved"
        if file_digest(file) != want.get("crc32"):
            return f"{rel} does not match its checksum (changed bytes)"
    return ""
