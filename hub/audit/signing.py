"""The audit trail's Ed25519 key: loaded from a PEM file, created there (mode 0600) if missing.

A record's signature is Ed25519 over its 32 hash bytes, base64; the record names its key by
`key_id` (first 16 hex digits of sha256 of the raw public key), so that after a key change the
old records still verify against the old public key.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)


class AuditKeyError(Exception):
    """The key file is missing (where it must exist), unreadable, or not an Ed25519 key."""


def key_id(public_key: Ed25519PublicKey) -> str:
    """The key's name in records: first 16 hex digits of sha256 of the raw public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _private_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _read_private(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise AuditKeyError(f"{path} is not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise AuditKeyError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def load_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """The Ed25519 private key in the PEM file at `path`; raises AuditKeyError if missing or bad."""
    file = Path(path)
    if not file.exists():
        raise AuditKeyError(f"no audit key at {file}")
    return _read_private(file)


def load_or_create_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """The key at `path`, generated and written there with mode 0600 first if the file is missing.

    The new key is written to a private temporary file and hard-linked into place, so `path`
    never exists half-written; when processes race, the link of one wins and the others read
    its key. Raises AuditKeyError if the file exists but holds no Ed25519 key.
    """
    file = Path(path)
    if file.exists():
        return _read_private(file)
    key = Ed25519PrivateKey.generate()
    pem = _private_pem(key)
    tmp = file.with_name(f".{file.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        _write_exclusive(tmp, pem)
        try:
            os.link(tmp, file)  # atomic, and fails if another process got there first
        except FileExistsError:
            return _read_private(file)
        except OSError:  # no hard links on this file system: create in place instead
            try:
                _write_exclusive(file, pem)
            except FileExistsError:
                return _read_private(file)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return key


def _write_exclusive(path: Path, data: bytes) -> None:
    """Create `path` with mode 0600 (failing if it exists) holding `data`, synced to disk."""
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


def public_key_pem(public_key: Ed25519PublicKey) -> bytes:
    """The public key as PEM (SubjectPublicKeyInfo), to hand to whoever verifies the trail."""
    return public_key.public_bytes(serialization.Encoding.PEM,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def load_public_key(data: bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM; raises AuditKeyError for anything else."""
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise AuditKeyError(f"not a PEM public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise AuditKeyError(f"a {type(key).__name__}, not an Ed25519 public key")
    return key


def verify_signature(public_key: Ed25519PublicKey, digest: bytes, signature: str) -> bool:
    """Whether `signature` (base64) is `public_key`'s Ed25519 signature of `digest`."""
    try:
        public_key.verify(base64.b64decode(signature, validate=True), digest)
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True)
class Signer:
    """Signs chain hashes with one private key and names that key in each record."""

    private_key: Ed25519PrivateKey
    key_id: str

    @classmethod
    def from_key(cls, private_key: Ed25519PrivateKey) -> Signer:
        """A signer for `private_key`."""
        return cls(private_key, key_id(private_key.public_key()))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Signer:
        """A signer for the key at `path`, created there first if missing (load_or_create_key)."""
        return cls.from_key(load_or_create_key(path))

    @property
    def public_key(self) -> Ed25519PublicKey:
        """The public half, for verify."""
        return self.private_key.public_key()

    def sign(self, digest: bytes) -> str:
        """Base64 Ed25519 signature of `digest`."""
        return base64.b64encode(self.private_key.sign(digest)).decode("ascii")


def public_keys_from(paths: str) -> dict[str, Ed25519PublicKey]:
    """key_id -> key of the PEM public keys in `paths` (comma-separated file paths, e.g.
    HUB_AUDIT_TRUSTED_KEYS); raises AuditKeyError for one that cannot be read."""
    keys: dict[str, Ed25519PublicKey] = {}
    for name in (p.strip() for p in paths.split(",")):
        if not name:
            continue
        try:
            public = load_public_key(Path(name).read_bytes())
        except OSError as exc:
            raise AuditKeyError(f"cannot read {name}: {exc.strerror}") from exc
        keys[key_id(public)] = public
    return keys
