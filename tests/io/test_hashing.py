"""`salign_cli.io.hashing`: every digest against one computed independently with hashlib."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from salign_cli.io.hashing import (
    HASH_CHUNK_BYTES,
    bytes_sha256,
    content_hash,
    file_sha256,
    text_hash,
    whole_content_hash,
)

ABC_SHA256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # FIPS 180-2 B.1


def test_sha256_of_abc_is_the_published_test_vector(tmp_path: Path) -> None:
    path = tmp_path / "abc.bin"
    path.write_bytes(b"abc")
    assert bytes_sha256(b"abc") == ABC_SHA256
    assert file_sha256(path) == ABC_SHA256


def test_file_sha256_reads_every_chunk_of_a_large_file(tmp_path: Path) -> None:
    data = bytes(range(256)) * (HASH_CHUNK_BYTES // 256) + b"tail"  # 1 MiB + 4 bytes
    path = tmp_path / "weights.safetensors"
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
    path.write_bytes(data[:-1] + b"T")  # only the last byte differs: in the second chunk
    assert file_sha256(path) != hashlib.sha256(data).hexdigest()


def test_text_hash_is_blake2b_128_of_the_utf8_text() -> None:
    assert text_hash("") == "cae66941d9efbd404e4d88758ea67670"  # BLAKE2b-128 of nothing
    assert text_hash("é|x") == hashlib.blake2b("é|x".encode(), digest_size=16).hexdigest()


def test_whole_content_hash_sees_a_change_in_the_middle(tmp_path: Path) -> None:
    data = bytearray(3 * HASH_CHUNK_BYTES)
    path = tmp_path / "scan.nii"
    path.write_bytes(bytes(data))
    expected = hashlib.blake2b(b"scan.nii\0" + bytes(data), digest_size=16).hexdigest()
    assert whole_content_hash(path) == expected
    data[len(data) // 2] = 1
    path.write_bytes(bytes(data))
    assert whole_content_hash(path) != expected
    assert whole_content_hash(path) == (
        hashlib.blake2b(b"scan.nii\0" + bytes(data), digest_size=16).hexdigest()
    )


def test_content_hash_of_a_small_file_is_blake2b_of_size_and_bytes(tmp_path: Path) -> None:
    data = b"salign" * 100
    path = tmp_path / "a.nii"
    path.write_bytes(data)
    expected = hashlib.blake2b(len(data).to_bytes(8, "little") + data, digest_size=16).hexdigest()
    assert content_hash(path) == expected
    copy = tmp_path / "sub" / "b.nii"
    copy.parent.mkdir()
    copy.write_bytes(data)
    assert content_hash(copy) == expected  # content, not path


def test_content_hash_of_a_large_file_reads_only_the_first_and_last_mib(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = bytearray(rng.integers(0, 256, 3 * HASH_CHUNK_BYTES + 17, dtype=np.uint8).tobytes())
    path = tmp_path / "big.nii"
    path.write_bytes(bytes(data))
    mib = HASH_CHUNK_BYTES
    expected = hashlib.blake2b(
        len(data).to_bytes(8, "little") + bytes(data[:mib]) + bytes(data[-mib:]), digest_size=16
    ).hexdigest()
    assert content_hash(path) == expected
    data[len(data) // 2] ^= 0xFF  # the middle is not read: documented blind spot
    path.write_bytes(bytes(data))
    assert content_hash(path) == expected
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))
    assert content_hash(path) != expected
