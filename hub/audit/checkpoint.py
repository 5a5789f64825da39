"""Signed checkpoints of the audit tree: what the sealer signs, what a witness keeps.

The signed text, in the spirit of a transparency log's checkpoint (C2SP signed note body):

    carehub-audit-checkpoint/v1
    <tree size>
    <root hash, 64 hex digits>
    <signed at, RFC 3339 UTC with microseconds>

signed with Ed25519 by the audit key; `key_id` names the key (signing.key_id). Exported as one
JSON object (`to_json`), which `from_json` reads back, e.g. a witness's saved copy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hub.audit.signing import Signer, verify_signature

HEADER = "carehub-audit-checkpoint/v1"


class CheckpointError(ValueError):
    """An exported checkpoint that cannot be read."""


def _instant(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Checkpoint:
    """The tree of `tree_size` leaves had root `root_hash` (hex) at `signed_at`."""

    tree_size: int
    root_hash: str
    signed_at: datetime
    key_id: str
    signature: str

    @staticmethod
    def text(tree_size: int, root_hash: str, signed_at: datetime) -> bytes:
        """The bytes that are signed."""
        return f"{HEADER}\n{tree_size}\n{root_hash}\n{_instant(signed_at)}\n".encode()

    @classmethod
    def sign(cls, signer: Signer, tree_size: int, root: bytes, signed_at: datetime
             ) -> Checkpoint:
        """A checkpoint of `root` at `tree_size`, signed now by `signer`."""
        text = cls.text(tree_size, root.hex(), signed_at)
        return cls(tree_size, root.hex(), signed_at, signer.key_id, signer.sign(text))

    def problem(self, keys: dict[str, Ed25519PublicKey]) -> str | None:
        """Why this checkpoint's signature does not hold under `keys`; None if it does."""
        key = keys.get(self.key_id)
        if key is None:
            return f"checkpoint {self.tree_size} is signed by an unknown key ({self.key_id})"
        if not verify_signature(key, self.text(self.tree_size, self.root_hash, self.signed_at),
                                self.signature):
            return (f"checkpoint {self.tree_size} has a bad signature: its size, root or time "
                    "was edited, or it was signed by another key")
        return None

    def to_json(self) -> dict[str, Any]:
        """The exported form (for a witness)."""
        return {"format": HEADER, "tree_size": self.tree_size, "root_hash": self.root_hash,
                "signed_at": _instant(self.signed_at), "key_id": self.key_id,
                "signature": self.signature}

    @classmethod
    def from_json(cls, data: Any) -> Checkpoint:
        """A checkpoint from its exported form; raises CheckpointError."""
        try:
            if data["format"] != HEADER:
                raise CheckpointError(f"not a {HEADER} checkpoint")
            at = datetime.strptime(data["signed_at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
            return cls(int(data["tree_size"]), str(data["root_hash"]), at, str(data["key_id"]),
                       str(data["signature"]))
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, CheckpointError):
                raise
            raise CheckpointError(f"not an exported checkpoint: {exc}") from exc

    @classmethod
    def loads(cls, text: str) -> Checkpoint:
        """A checkpoint from exported JSON text; raises CheckpointError."""
        try:
            return cls.from_json(json.loads(text))
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"not JSON: {exc}") from exc
