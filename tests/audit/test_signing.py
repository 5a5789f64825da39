"""The audit key: created 0600 on first load, reused after, the same for racing processes."""

from __future__ import annotations

import multiprocessing
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)

from hub.audit.signing import (
    AuditKeyError,
    Signer,
    key_id,
    load_key,
    load_or_create_key,
    load_public_key,
    public_key_pem,
    verify_signature,
)


def test_key_file_is_created_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "audit.pem"
    first = load_or_create_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    again = load_or_create_key(path)
    assert key_id(again.public_key()) == key_id(first.public_key())
    assert [p.name for p in tmp_path.iterdir()] == ["audit.pem"]  # no temporary left behind


def test_signatures_verify_with_the_exported_public_key(tmp_path: Path) -> None:
    signer = Signer.from_file(tmp_path / "k.pem")
    digest = bytes(range(32))
    signature = signer.sign(digest)
    public = load_public_key(public_key_pem(signer.public_key))
    assert key_id(public) == signer.key_id
    assert len(signer.key_id) == 16
    assert verify_signature(public, digest, signature)
    assert not verify_signature(public, bytes(32), signature)
    assert not verify_signature(public, digest, "not base64!")


def test_missing_or_foreign_key_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(AuditKeyError, match="no audit key"):
        load_key(tmp_path / "missing.pem")
    ec = tmp_path / "ec.pem"
    ec.write_bytes(generate_private_key(SECP256R1()).private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    with pytest.raises(AuditKeyError, match="not an Ed25519 key"):
        load_or_create_key(ec)
    junk = tmp_path / "junk.pem"
    junk.write_text("hello")
    with pytest.raises(AuditKeyError, match="not an unencrypted PEM"):
        load_key(junk)


def _racer(path: str, start: Any, out: Any) -> None:
    start.wait(60)
    out.put(Signer.from_file(path).key_id)


def test_processes_racing_to_create_the_key_share_one(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    racers = 4
    start, out = ctx.Barrier(racers), ctx.Queue()
    path = str(tmp_path / "raced.pem")
    procs = [ctx.Process(target=_racer, args=(path, start, out)) for _ in range(racers)]
    for p in procs:
        p.start()
    ids = {out.get(timeout=120) for _ in procs}
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * racers
    assert ids == {Signer.from_file(path).key_id}
    assert [p.name for p in tmp_path.iterdir()] == ["raced.pem"]
