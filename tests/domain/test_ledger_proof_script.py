"""scripts/check_ledger_proof.py, run as an auditor runs it, on proofs the ledger code makes.

The proofs come from domain.ledger (chain, merkle, head) and a fresh Ed25519 key, so the
checker's restated formats are held to the real ones: a checker that drifted from them
would refuse the good proofs below. Then each part of a proof is forged in turn and the
checker must refuse it with exit 1 and one line, never a traceback.
"""

from __future__ import annotations

import base64
import copy
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from domain.ledger.chain import GENESIS, event_digest, link_of, with_link
from domain.ledger.head import TreeHead, tips_digest
from domain.ledger.merkle import inclusion_proof, root_of

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "check_ledger_proof.py"
PYTHON = sys.executable  # the venv's interpreter: pytest runs under it
KEY = Ed25519PrivateKey.generate()
PUBLIC_HEX = KEY.public_key().public_bytes_raw().hex()
OTHER_KEY = Ed25519PrivateKey.generate()
SIGNED_AT = "2026-03-01T12:00:00+00:00"


@dataclass(frozen=True)
class Stored:
    position: int
    originator_id: str
    version: int
    topic: str
    state: bytes

    @property
    def digest(self) -> bytes:
        return event_digest(self.originator_id, self.version, self.topic, self.state)


def _history() -> list[Stored]:
    """Three tasks' lives interleaved, 20 events, chained as the mapper chains them."""
    tasks = {name: UUID(int=0xC0FFEE + i).hex for i, name in enumerate(("web", "db", "cache"))}
    steps = ["Created", "Started", "Observed", "Observed", "Exited", "Deleted"]
    order = ["web", "db", "web", "cache", "db", "web", "web", "cache", "db", "cache",
             "web", "db", "cache", "db", "cache", "web", "db", "cache", "cache", "db"]  # fmt: skip
    last: dict[str, tuple[int, str]] = {}
    events: list[Stored] = []
    position = 0
    for n, name in enumerate(order):
        version, link = last.get(name, (0, GENESIS))
        version += 1
        position += 2 if n == 9 else 1  # a rolled-back insert leaves a gap in positions
        body = {
            "namespace": "default",
            "task_id": name,
            "incarnation": 1,
            "pid": 4000 + n,
            "bundle": f"/run/bundles/{name}",
            "status": "running",
            "cause": {"kind": "cli", "user": "root", "uid": 0, "host": "node-a"},
            "timestamp": {"_type_": "datetime_iso", "_data_": f"2026-03-01T11:{n:02d}:00"},
        }
        state = with_link(json.dumps(body, separators=(",", ":")).encode(), link)
        topic = f"domain.task:Task.{steps[min(version - 1, len(steps) - 1)]}"
        event = Stored(position, tasks[name], version, topic, state)
        events.append(event)
        last[name] = (version, event.digest.hex())
    return events


EVENTS = _history()
DIGESTS = [e.digest for e in EVENTS]


def make_proof(
    index: int, size: int = len(EVENTS), key: Ed25519PrivateKey = KEY, root: bytes | None = None
) -> dict[str, Any]:
    """What `shimledger ledger prove` will print: the event, its path and the signed head."""
    tips: dict[str, tuple[str, int, str, int]] = {}
    for e in EVENTS[:size]:
        tips[e.originator_id] = (e.originator_id, e.version, e.digest.hex(), e.position)
    head = TreeHead(
        node="node-a",
        number=1,
        since=0,
        tree_size=size,
        position=EVENTS[size - 1].position,
        root=(root or root_of(DIGESTS[:size])).hex(),
        tips=tips_digest(tips.values()),
        signed_at=SIGNED_AT,
        public_key=key.public_key().public_bytes_raw().hex(),
    )
    event = EVENTS[index]
    return {
        "format": "shimledger-inclusion-proof/1",
        "event": {
            "position": event.position,
            "originator_id": event.originator_id,
            "version": event.version,
            "topic": event.topic,
            "state": base64.b64encode(event.state).decode(),
        },
        "leaf_index": index,
        "audit_path": [h.hex() for h in inclusion_proof(DIGESTS, index, size)],
        "head": head.exported(key.sign(head.message()).hex()),
    }


Done = subprocess.CompletedProcess[str]


def run(tmp_path: Path, proof: dict[str, Any] | bytes, *args: str) -> Done:
    raw = proof if isinstance(proof, bytes) else json.dumps(proof).encode()
    (tmp_path / "proof.json").write_bytes(raw)
    command = [PYTHON, str(SCRIPT), str(tmp_path / "proof.json"), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=tmp_path)


def test_the_history_is_chained_as_the_store_chains() -> None:
    """The fixture itself: every state carries its predecessor's digest, as stored."""
    seen: dict[str, str] = {}
    for e in EVENTS:
        assert link_of(e.state) == seen.get(e.originator_id, GENESIS).encode()
        seen[e.originator_id] = e.digest.hex()
    assert len(EVENTS) == 20 and EVENTS[-1].position == 21


@pytest.mark.parametrize(("index", "size"), [(0, 20), (7, 20), (19, 20), (4, 13), (12, 13),
                                             (0, 1), (9, 16), (16, 17)])  # fmt: skip
def test_a_good_proof_is_accepted(tmp_path: Path, index: int, size: int) -> None:
    event = EVENTS[index]
    done = run(tmp_path, make_proof(index, size), "--key", PUBLIC_HEX)
    assert (done.returncode, done.stderr) == (0, "")
    first, rest = done.stdout.split("\n", 1)
    assert first == (
        f"OK: event {event.position} ({event.topic} v{event.version} of {event.originator_id})"
        f" is leaf {index} of the {size}-event tree signed by node-a at {SIGNED_AT}"
        f" (key {PUBLIC_HEX[:16]}...)"
    )
    assert json.loads(rest) == json.loads(event.state)
    assert rest.startswith('{\n  "_prev": "'), "pretty, in the stored key order"


def test_without_a_key_it_is_accepted_with_a_note_and_from_stdin(tmp_path: Path) -> None:
    command = [PYTHON, str(SCRIPT), "-"]
    stdin = json.dumps(make_proof(3))
    done = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("OK: event 4 ")
    assert done.stderr.startswith("check_ledger_proof: note: the key is the head's own")


Forgery = Callable[[dict[str, Any]], Any]


def _state_flipped(proof: dict[str, Any]) -> None:
    state = bytearray(base64.b64decode(proof["event"]["state"]))
    state[state.index(b"running")] ^= 0x01  # "running" -> "sunning": still valid JSON
    proof["event"]["state"] = base64.b64encode(bytes(state)).decode()


def _resigned(**changes: Any) -> Forgery:
    """The node's own key signing a head this event is not under: only the path can tell."""

    def forge(proof: dict[str, Any]) -> None:
        body = {k: v for k, v in proof["head"].items() if k != "signature"} | changes
        proof["head"] = TreeHead(**body).exported(KEY.sign(TreeHead(**body).message()).hex())

    return forge


def _signature_byte_changed(proof: dict[str, Any]) -> None:
    signature = bytearray.fromhex(proof["head"]["signature"])
    signature[10] ^= 0x40
    proof["head"]["signature"] = signature.hex()


def _set(*keys: str | int, value: Any) -> Forgery:
    def forge(proof: dict[str, Any]) -> None:
        target = proof
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value  # type: ignore[index]

    return forge


def _upper(*keys: str) -> Forgery:
    def forge(proof: dict[str, Any]) -> None:
        proof[keys[0]][keys[1]] = proof[keys[0]][keys[1]].upper()

    return forge


def _deleted(*keys: str) -> Forgery:
    def forge(proof: dict[str, Any]) -> None:
        target = proof
        for key in keys[:-1]:
            target = target[key]
        del target[keys[-1]]

    return forge


FORGERIES: dict[str, tuple[Forgery, str]] = {
    "state byte flipped": (_state_flipped, "audit path does not lead"),
    "leaf index moved": (_set("leaf_index", value=8), "audit path does not lead"),
    "leaf index past the tree": (_set("leaf_index", value=20), "not in a tree of 20"),
    "leaf index negative": (_set("leaf_index", value=-1), "at least 0"),
    "path element dropped": (lambda p: p["audit_path"].pop(1), "audit path does not lead"),
    "path element extra": (lambda p: p["audit_path"].append("00" * 32), "does not lead"),
    "path element not hex": (_set("audit_path", 0, value="zz" * 32), "audit_path[0] must be"),
    "root changed": (_set("head", "root", value="ab" * 32), "signature does not verify"),
    "root changed and re-signed": (_resigned(root=DIGESTS[0].hex()), "audit path does not lead"),
    # The real root, claimed for 33 events: a path of 5 cannot reach the top of 33.
    "tree size re-signed larger": (_resigned(tree_size=33, position=34), "does not lead"),
    "signature byte changed": (_signature_byte_changed, "signature does not verify"),
    "signature short": (_set("head", "signature", value="00" * 63), "128 hex digits"),
    "tree size changed": (_set("head", "tree_size", value=21), "signature does not verify"),
    "tree size a string": (_set("head", "tree_size", value="20"), "must be a JSON integer"),
    "version changed": (_set("event", "version", value=5), "audit path does not lead"),
    "topic changed": (_set("event", "topic", value="domain.task:Task.Deleted"), "does not lead"),
    "originator upper case": (_upper("event", "originator_id"), "32 lowercase hex"),
    "position impossible": (_set("event", "position", value=99), "cannot be leaf 7 of 20"),
    "state not base64": (_set("event", "state", value="not base64!"), "not valid base64"),
    "topic missing": (_deleted("event", "topic"), "event has no 'topic'"),
    "head missing": (_deleted("head"), "proof has no 'head'"),
    "head field missing": (_deleted("head", "signed_at"), "head has no 'signed_at'"),
    "proof format wrong": (_set("format", value="inclusion-proof/2"), "not a shimledger-incl"),
    "unsigned field added": (_set("head", "comment", value="trust me"), "does not verify"),
    "since changed": (_set("head", "since", value=3), "signature does not verify"),
    "head format wrong": (_set("head", "format", value="x"), "not a shimledger-tree-head/1"),
    "event not an object": (_set("event", value=[1, 2]), "proof.event must be a JSON dict"),
}


def assert_refused(done: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert done.returncode == 1, done
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("check_ledger_proof: "), done.stderr
    assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("name", FORGERIES)
def test_a_forged_proof_is_refused(tmp_path: Path, name: str) -> None:
    forge, fragment = FORGERIES[name]
    proof = make_proof(7)
    assert run(tmp_path, proof, "--key", PUBLIC_HEX).returncode == 0, "the unforged one passes"
    forged = copy.deepcopy(proof)
    forge(forged)
    assert forged != proof
    assert_refused(run(tmp_path, forged, "--key", PUBLIC_HEX), fragment)


def test_a_head_signed_by_another_key_is_refused(tmp_path: Path) -> None:
    assert_refused(run(tmp_path, make_proof(7), "--key", OTHER_KEY.public_key()
                       .public_bytes_raw().hex()), "not by the --key given")  # fmt: skip
    forged = make_proof(7, key=OTHER_KEY)  # self-consistent, by someone else's key
    assert run(tmp_path, forged).returncode == 0
    assert_refused(run(tmp_path, forged, "--key", PUBLIC_HEX), "not by the --key given")


@pytest.mark.parametrize(
    ("raw", "args", "fragment"),
    [
        (b'{"format": "shimledger-inclusion-proof/1", "event": {', (), "is not JSON"),
        (b"[1, 2, 3]", (), "must be a JSON object"),
        (b"[" * 100_000, (), "is not JSON"),
        (b"\xff\xfe{\x80", (), "is not JSON"),
        (b"{}", ("--key", "abc"), "--key must be 64 hex digits"),
        (b"{}", ("--bogus",), "unrecognized arguments"),
    ],
)
def test_malformed_input_is_refused_in_one_line(
    tmp_path: Path, raw: bytes, args: tuple[str, ...], fragment: str
) -> None:
    assert_refused(run(tmp_path, raw, *args), fragment)


def test_a_missing_file_and_missing_arguments_are_refused(tmp_path: Path) -> None:
    missing = [PYTHON, str(SCRIPT), str(tmp_path / "nope.json")]
    assert_refused(subprocess.run(missing, capture_output=True, text=True), "cannot read")
    bare = [PYTHON, str(SCRIPT)]
    assert_refused(subprocess.run(bare, capture_output=True, text=True), "required")


# --- the checker must stand alone ---

IMPORTS_OF = """
import json, runpy, sys
root, script, proof = sys.argv[1:4]
sys.path[:] = [p for p in sys.path if p not in ("", root, root + "/scripts")]
sys.argv = [script, proof]
try:
    runpy.run_path(script, run_name="__main__")
    code = 0
except SystemExit as done:
    code = done.code
except BaseException as error:
    code = repr(error)
ours = ("domain", "adapters", "shim", "projections", "cli", "tests")
project = sorted(
    name for name, module in sys.modules.items()
    if name.split(".")[0] in ours
    or ((getattr(module, "__file__", None) or "").startswith(root + "/")
        and not (module.__file__ or "").startswith(root + "/.venv/"))
)
print("IMPORTS:" + json.dumps({"exit": code, "project": project}))
"""


def imports_of(script: Path, tmp_path: Path) -> dict[str, Any]:
    """Run ``script`` on a good proof, with the project off sys.path; what it pulled in."""
    (tmp_path / "proof.json").write_text(json.dumps(make_proof(5)))
    done = subprocess.run([PYTHON, "-c", IMPORTS_OF, str(ROOT), str(script),
                           str(tmp_path / "proof.json")],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)  # fmt: skip
    marker = [line for line in done.stdout.splitlines() if line.startswith("IMPORTS:")]
    assert marker, done
    result: dict[str, Any] = json.loads(marker[-1].removeprefix("IMPORTS:"))
    return result


def test_the_checker_imports_nothing_of_the_project(tmp_path: Path) -> None:
    assert imports_of(SCRIPT, tmp_path) == {"exit": 0, "project": []}


def test_the_import_check_catches_a_checker_that_leans_on_the_project(tmp_path: Path) -> None:
    leaning = tmp_path / "leaning_checker.py"
    future = "from __future__ import annotations\n"
    leaning.write_text(SCRIPT.read_text().replace(future, future + "import domain.ledger\n", 1))
    found = imports_of(leaning, tmp_path)
    # Installed editable, the import works and is seen; not installed, it fails outright.
    assert "domain.ledger" in found["project"] or "No module named 'domain'" in str(found["exit"])
