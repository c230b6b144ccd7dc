"""`shimledger ledger ...`: sign, verify and prove the history (shim/ledger/service.py).

Composition root for the ledger: the key and the witness live under ``<root>/ledger/``,
the node is ``--node``'s. `cryptography` is imported by these commands only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.common import fail, with_ledger
from cli.settings import Settings

if TYPE_CHECKING:
    from cli.ledger import Ledger
    from domain.ledger.verification import Finding, Report
    from shim.ledger.service import LedgerService, LedgerStore

app = typer.Typer(
    help="The tamper-evident ledger: signed tree heads over the history, and their proofs."
)


def key_path(settings: Settings) -> Path:
    return settings.root / "ledger" / "signing-key.pem"


def witness_path(settings: Settings) -> Path:
    return settings.root / "ledger" / "head.json"


def ledger_service(settings: Settings, store: LedgerStore, *, create_key: bool) -> LedgerService:
    from adapters.ledger_key import SigningKey, signature_valid
    from shim.clock import now
    from shim.ledger.service import LedgerService

    return LedgerService(
        store,
        settings.node,
        lambda: SigningKey.load(key_path(settings), create=create_key),
        signature_valid,
        witness_path(settings),
        now,
    )


@app.command()
def checkpoint(ctx: typer.Context) -> None:
    """Sign the Merkle tree head over every event so far with this node's key (made 0600
    on first use); serve does this every --checkpoint-interval."""
    settings: Settings = ctx.obj

    async def work(ledger: Ledger) -> str:
        from cli.bootstrap import cli_cause

        signed = await ledger_service(settings, ledger.store, create_key=True).checkpoint(
            cli_cause(settings.node)
        )
        if signed is None:
            return "nothing new since the last signed head"
        head, _ = signed
        return (
            f"signed head: {head.tree_size} events up to position {head.position}, "
            f"root {head.root[:16]}..., node {head.node}, key {head.public_key[:16]}..."
        )

    typer.echo(with_ledger(settings, work))


@app.command()
def verify(
    ctx: typer.Context,
    against: Annotated[
        list[Path] | None,
        typer.Option(
            "--against",
            help="A head exported earlier (JSON); repeatable.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The findings as JSON.")] = False,
) -> None:
    """Recompute every event's chain and every signed head; check the store still extends
    each exported head (and this node's last, kept beside its key). Exit 1 on any finding,
    naming the first event edited, deleted, inserted or reordered."""
    settings: Settings = ctx.obj
    given = [(str(path), _read_head(path)) for path in against or []]

    async def work(ledger: Ledger) -> tuple[Report, list[str]]:
        service = ledger_service(settings, ledger.store, create_key=False)
        heads = list(given)
        kept = service.witness()
        if kept is not None:
            heads.append((f"this node's last head ({witness_path(settings)})", kept))
        verdict = await service.verify(heads)
        names = await ledger.store.scan(lambda raw: _names(raw, verdict.findings))
        _rename(verdict.report, names)
        return verdict.report, verdict.against

    report, proven = with_ledger(settings, work)
    if as_json:
        typer.echo(json.dumps(_as_json(report, proven), indent=2))
    else:
        for line in _summary(report, proven):
            typer.echo(line)
    if report.findings:
        raise typer.Exit(1)


@app.command()
def prove(
    ctx: typer.Context,
    position: Annotated[
        int, typer.Argument(help="The event's position (history --json says it).", min=1)
    ],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write it here.")] = None,
) -> None:
    """Print an inclusion proof of one event in the newest signed head: what
    scripts/check_ledger_proof.py checks off the host."""
    settings: Settings = ctx.obj

    async def work(ledger: Ledger) -> dict[str, Any]:
        return await ledger_service(settings, ledger.store, create_key=False).prove(position)

    _emit(with_ledger(settings, work), output)


@app.command("export-head")
def export_head(
    ctx: typer.Context,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write it here.")] = None,
) -> None:
    """Print the newest signed head as JSON: keep it off the host, then `verify --against` it."""
    settings: Settings = ctx.obj

    async def work(ledger: Ledger) -> dict[str, Any]:
        return await ledger_service(settings, ledger.store, create_key=False).export_head()

    _emit(with_ledger(settings, work), output)


@app.command()
def key(ctx: typer.Context) -> None:
    """Print this node's public key (hex, Ed25519), making the key pair on first use."""
    settings: Settings = ctx.obj
    from adapters.ledger_key import SigningKey
    from cli.common import expected_errors

    with expected_errors(settings):
        signing = SigningKey.load(key_path(settings), create=True)
    typer.echo(signing.public_key)


def _read_head(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise fail(f"{path}: not an exported head ({exc})") from None
    if not isinstance(data, dict):
        raise fail(f"{path}: not an exported head (a JSON object is)")
    return data


def _emit(document: dict[str, Any], output: Path | None) -> None:
    text = json.dumps(document, indent=2) + "\n"
    if output is None:
        sys.stdout.write(text)
        return
    from shim.private_files import write_private

    try:
        write_private(output, text, mode=0o644)
    except OSError as exc:
        raise fail(f"cannot write {output}: {exc.strerror}") from None


def _names(raw: Any, findings: list[Finding]) -> dict[str, str]:
    """What each named aggregate is, from its first event: a task's namespace/ID and
    incarnation, or a node's ledger."""
    names: dict[str, str] = {}
    for aggregate in {f.aggregate for f in findings if f.aggregate}:
        first = raw.opened(aggregate)
        try:
            data = json.loads(first[4]) if first else {}
        except ValueError:
            data = {}
        if "task_id" in data:
            names[aggregate] = (
                f"task {data.get('namespace')}/{data['task_id']} #{data.get('incarnation')}"
            )
        elif "node" in data:
            names[aggregate] = f"head {data.get('number')} of node {data['node']}"
    return names


def _rename(report: Report, names: dict[str, str]) -> None:
    from dataclasses import replace

    report.findings = [
        replace(f, text=f.text.replace(f"aggregate {f.aggregate}", names[f.aggregate]))
        if f.aggregate in names
        else f
        for f in report.findings
    ]


def _summary(report: Report, proven: list[str]) -> list[str]:
    lines: list[str] = []
    if report.findings:
        first = report.findings[0]
        lines.append(f"ledger: NOT VERIFIED: {first.text}")
        lines.extend(f"  also: {f.text}" for f in report.findings[1:20])
        if len(report.findings) > 20:
            lines.append(f"  ... and {len(report.findings) - 20} more")
    else:
        lines.append(
            f"ledger: verified {report.events} events and {len(report.heads)} signed heads"
        )
    last = report.last_head
    if last is not None:
        lines.append(
            f"  newest head: {last.head.tree_size} events up to position "
            f"{last.head.position}, signed by {last.head.node} at {last.head.signed_at}"
        )
    if report.legacy:
        lines.append(
            f"  {report.legacy} events were written before chaining began (chains "
            f"start at position {report.chained_from}): only heads cover them"
        )
    if report.uncovered:
        lines.append(
            f"  {report.uncovered} events after the newest head are checked by their "
            "chains only (until the next checkpoint)"
        )
    lines.extend(f"  {line}" for line in proven)
    return lines


def _as_json(report: Report, proven: list[str]) -> dict[str, Any]:
    last = report.last_head
    return {
        "verified": not report.findings,
        "events": report.events,
        "heads": len(report.heads),
        "legacy": report.legacy,
        "chained_from": report.chained_from,
        "uncovered": report.uncovered,
        "newest_head": last.head.exported(last.signature) if last else None,
        "findings": [
            {
                "position": f.position,
                "kind": f.kind,
                "text": f.text,
                "aggregate": f.aggregate,
                "version": f.version,
            }
            for f in report.findings
        ],
        "against": proven,
    }


def register(main: typer.Typer) -> None:
    main.add_typer(app, name="ledger")
