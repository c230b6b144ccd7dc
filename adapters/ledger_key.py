"""The node's Ed25519 signing key, made on first use, only its owner reads it.

`cryptography` (pyca, the well-kept binding to OpenSSL) signs and verifies; it is imported
by this module only, and this module only by the ledger's commands and serve's
checkpoints, so no other command pays for loading OpenSSL. The key is kept as a PKCS#8
PEM file (what `openssl pkey` reads), mode 0600 in a 0700 directory, created whole or not
at all: two first checkpoints at once end with one key, both using it.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from domain.errors import FailedPreconditionError
from shim.private_files import create_private


class SigningKey:
    """One node's key: signs tree heads; its public half is what auditors pin."""

    def __init__(self, private: Ed25519PrivateKey, path: Path) -> None:
        self._private = private
        self.path = path
        self.public_key = (
            private.public_key()
            .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            .hex()
        )

    @classmethod
    def load(cls, path: Path, *, create: bool) -> SigningKey:
        """The key at ``path``; made there first if ``create`` and it does not exist."""
        if create and not path.exists():
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            pem = Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            create_private(path, pem)  # False: another process made it first; we read theirs
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise FailedPreconditionError(
                f"no ledger signing key at {path}: `shimledger ledger checkpoint` makes one"
            ) from None
        except OSError as exc:
            raise FailedPreconditionError(f"ledger signing key {path}: {exc.strerror}") from None
        try:
            private = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise FailedPreconditionError(f"ledger key {path}: unreadable ({exc})") from None
        if not isinstance(private, Ed25519PrivateKey):
            raise FailedPreconditionError(f"ledger signing key {path} is not an Ed25519 key")
        if os.stat(path).st_mode & 0o077:
            raise FailedPreconditionError(
                f"ledger signing key {path} is readable by others: chmod 600 it, or replace it"
            )
        return cls(private, path)

    def sign(self, message: bytes) -> str:
        return self._private.sign(message).hex()


def signature_valid(public_key: str, message: bytes, signature: str) -> bool:
    """Whether ``signature`` (hex) is ``public_key``'s (hex) over ``message``."""
    try:
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key))
        key.verify(bytes.fromhex(signature), message)
    except (ValueError, InvalidSignature):
        return False
    return True
