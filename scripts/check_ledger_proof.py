#!/usr/bin/env python3
"""Check a shimledger inclusion proof off the host: one event, one signed tree head.

    python3 check_ledger_proof.py PROOF.json [--key PUBLIC_KEY_HEX]    (PROOF.json may be -)

Stand-alone on purpose: it imports only the standard library and `cryptography`, nothing
of shimledger. An auditor runs it where the host cannot reach, on a proof the host may have
forged, so it must not trust code the host ships; and a checker that reuses the code under
audit would agree with that code's bugs. The formats are therefore restated here, in a few
lines of its own, from domain/ledger/__init__.py (the promise both sides keep):

- leaf hash = SHA-256(0x00 || originator_id || 0x00 || version || 0x00 || topic || 0x00
  || state): the id as 32 lowercase hex digits, the version in decimal ASCII, the topic in
  UTF-8, the state exactly as stored (RFC 6962's leaf hash of that leaf input);
- the head's root is the RFC 6962 Merkle root of the first tree_size leaf hashes, and
  the audit path is RFC 6962's PATH, checked by RFC 9162 section 2.1.3.2;
- the Ed25519 signature covers the exported head without its "signature", as JSON with
  sorted keys, no spaces, ASCII only. Every field is signed, so the checker needs to know
  only the fields it reads (a head that grows one still checks, and an unsigned one fails).

Without --key it proves only that the head's own key signed it: anyone can make such a
proof with a key of their own. Pass the node's key, kept from an earlier export, to pin it.
The event's position is not in its leaf hash, so it is held only to what the head allows.
Exit 0 when everything holds; otherwise one line on stderr and exit 1.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import os
import re
import sys
from typing import Any, NoReturn

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

PROG = "check_ledger_proof"
PROOF_FORMAT = "shimledger-inclusion-proof/1"
HEAD_FORMAT = "shimledger-tree-head/1"


class Failure(Exception):
    """A check that did not hold; its message is the one line the auditor reads."""


def fail(message: str) -> NoReturn:
    raise Failure(message)


class Arguments(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse's own exits 2 with the usage
        fail(message)


def _get(obj: dict[str, Any], where: str, name: str, kind: type) -> Any:
    if name not in obj:
        fail(f"{where} has no {name!r}")
    value = obj[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        fail(f"{where}.{name} must be a JSON {'integer' if kind is int else kind.__name__}")
    return value


def _count(obj: dict[str, Any], where: str, name: str, least: int = 0) -> int:
    value: int = _get(obj, where, name, int)
    if value < least:
        fail(f"{where}.{name} must be at least {least}, not {value}")
    return value


def _hex(obj: dict[str, Any], where: str, name: str, digits: int, digit: str = "0-9a-fA-F") -> str:
    value: str = _get(obj, where, name, str)
    if not re.fullmatch(f"[{digit}]{{{digits}}}", value):
        case = " lowercase" if digit == "0-9a-f" else ""
        fail(f"{where}.{name} must be {digits}{case} hex digits")
    return value


def _hash_hex(value: object, where: str) -> bytes:
    if not isinstance(value, str) or not re.fullmatch("[0-9a-fA-F]{64}", value):
        fail(f"{where} must be 64 hex digits")
    return bytes.fromhex(value)


def leaf_hash(originator_id: str, version: int, topic: str, state: bytes) -> bytes:
    try:
        encoded_topic = topic.encode("utf-8")
    except UnicodeEncodeError:
        fail("event.topic is not encodable as UTF-8")
    leaf_input = b"\x00".join([originator_id.encode("ascii"), str(version).encode("ascii"),
                               encoded_topic, state])  # fmt: skip
    return hashlib.sha256(b"\x00" + leaf_input).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_from_path(leaf: bytes, index: int, size: int, path: list[bytes]) -> bytes | None:
    """The root the audit path leads to (RFC 9162 section 2.1.3.2), or None if it cannot."""
    if not 0 <= index < size:
        return None
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return None  # more path than the tree has levels
        if fn & 1 or fn == sn:
            r = _node(p, r)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = _node(r, p)
        fn, sn = fn >> 1, sn >> 1
    return r if sn == 0 else None


def read_proof(path: str) -> dict[str, Any]:
    try:
        if path == "-":
            raw = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as file:
                raw = file.read()
    except OSError as error:
        fail(f"cannot read {path}: {error.strerror or error}")
    try:
        proof = json.loads(raw)
    except (ValueError, RecursionError) as error:
        fail(f"{'stdin' if path == '-' else path} is not JSON: {error}")
    if not isinstance(proof, dict):
        fail("the proof must be a JSON object")
    if proof.get("format") != PROOF_FORMAT:
        fail(f"not a {PROOF_FORMAT} proof (format {proof.get('format')!r})")
    return proof


def _shown(text: str) -> str:
    """Printable ASCII only: the names come from a file that may be out to fool a terminal."""
    return "".join(c if " " <= c <= "~" else c.encode("unicode_escape").decode() for c in text)


def check(proof: dict[str, Any], pinned_key: str | None) -> str:
    """Every check, in the order an auditor would want to hear of the first failure."""
    event = _get(proof, "proof", "event", dict)
    head = _get(proof, "proof", "head", dict)
    position = _count(event, "event", "position")
    originator_id = _hex(event, "event", "originator_id", 32, digit="0-9a-f")
    version = _count(event, "event", "version", least=1)
    topic: str = _get(event, "event", "topic", str)
    try:
        state = base64.b64decode(_get(event, "event", "state", str), validate=True)
    except (binascii.Error, ValueError):
        fail("event.state is not valid base64")
    index = _count(proof, "proof", "leaf_index")
    siblings = enumerate(_get(proof, "proof", "audit_path", list))
    path = [_hash_hex(p, f"audit_path[{i}]") for i, p in siblings]

    if head.get("format") != HEAD_FORMAT:
        fail(f"not a {HEAD_FORMAT} head (format {head.get('format')!r})")
    for name in ("node", "signed_at"):
        _get(head, "head", name, str)
    size = _count(head, "head", "tree_size", least=1)
    last_position = _count(head, "head", "position")
    root = bytes.fromhex(_hex(head, "head", "root", 64))
    public_key = _hex(head, "head", "public_key", 64)
    signature = bytes.fromhex(_hex(head, "head", "signature", 128))

    if pinned_key is not None and bytes.fromhex(public_key) != bytes.fromhex(pinned_key):
        fail(f"the head is signed by key {public_key[:16]}..., not by the --key given")
    body = {name: value for name, value in head.items() if name != "signature"}
    message = json.dumps(body, sort_keys=True, separators=(",", ":")).encode("ascii")
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key)).verify(signature, message)
    except (InvalidSignature, ValueError):
        fail(f"the head's signature does not verify with its key {public_key[:16]}...")

    if index >= size:
        fail(f"leaf_index {index} is not in a tree of {size} events")
    if position > last_position - (size - 1 - index):  # positions rise strictly, leaf by leaf
        fail(f"event {position} cannot be leaf {index} of {size} ending at {last_position}")
    leaf = leaf_hash(originator_id, version, topic, state)
    if root_from_path(leaf, index, size, path) != root:
        fail(f"the audit path does not lead from this event at leaf {index} to the head's root")

    summary = (f"OK: event {position} ({_shown(topic)} v{version} of {originator_id}) is leaf "
               f"{index} of the {size}-event tree signed by {_shown(head['node'])} at "
               f"{_shown(head['signed_at'])} (key {public_key[:16]}...)")  # fmt: skip
    return summary + "\n" + _state_text(state)


def _state_text(state: bytes) -> str:
    try:
        return json.dumps(json.loads(state), indent=2)  # ASCII escapes, as in _shown
    except (ValueError, RecursionError):
        return f"(the state is {len(state)} bytes that are not JSON: {state!r})"


def main(argv: list[str] | None = None) -> int:
    parser = Arguments(prog=PROG, description="Check a shimledger inclusion proof.")
    parser.add_argument("proof", metavar="PROOF.json", help="the proof, or - for stdin")
    parser.add_argument("--key", metavar="PUBLIC_KEY_HEX", help="the node's Ed25519 key")
    try:
        args = parser.parse_args(argv)
        if args.key is not None and not re.fullmatch("[0-9a-fA-F]{64}", args.key):
            fail("--key must be 64 hex digits (an Ed25519 public key)")
        print(check(read_proof(args.proof), args.key))
        sys.stdout.flush()  # here, so that a reader gone early is met below, not at exit
        if args.key is None:
            print(f"{PROG}: note: the key is the head's own; pass --key to pin it", file=sys.stderr)
    except BrokenPipeError:  # `| head`: the checks held, the reader wanted no more of it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except Failure as failure:
        print(f"{PROG}: {_shown(str(failure))}", file=sys.stderr)
        return 1
    except Exception as error:  # an auditor's tool answers in one line, never a traceback
        print(f"{PROG}: unexpected {type(error).__name__}: {_shown(str(error))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
