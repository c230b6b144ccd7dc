"""`shimledger serve`: the long-running service beside the commands.

It owns the event sink of the state dir, so the shims started by any command deliver their
events to it, and its control socket, so that the `shimledger` command hands its work to
it instead of starting the whole CLI (cli/launcher.py); commands run without it as before
when it is not there. SIGTERM or SIGINT
stops it cleanly (exit 0): containers and shims keep running, and what happens while it is
down is found by reconciliation when it (or any command) next looks.
"""

from __future__ import annotations

import logging
import signal as signals
from typing import TYPE_CHECKING, Annotated

import typer

from cli.common import expected_errors, run_command
from cli.handoff import CONTROL_SOCKET
from cli.settings import Settings
from domain.errors import InvalidArgumentError, UnavailableError

if TYPE_CHECKING:
    from asyncio import Event

    from cli.ledger import Ledger
    from cli.metrics_address import MetricsAddress
    from cli.metrics_export import MetricsServer

logger = logging.getLogger(__name__)


def serve(
    ctx: typer.Context,
    checkpoint_interval: Annotated[
        str,
        typer.Option(
            help="Sign the ledger's tree head this often (a duration: 30s, 5m); "
            "once more on stop; 0: never, not even on stop."
        ),
    ] = "60s",
    metrics_address: Annotated[
        str | None,
        typer.Option(
            metavar="HOST:PORT",
            help="Serve Prometheus metrics of the history at http://HOST:PORT/metrics "
            "(port 0: any free one, said on stderr). Off unless given; loopback only "
            "unless --metrics-public.",
        ),
    ] = None,
    metrics_public: Annotated[
        bool,
        typer.Option(help="Let --metrics-address be a non-loopback address (no authentication)."),
    ] = False,
) -> None:
    """Serve shims' events, watch every shim, keep history and views current.

    On start, reconcile the state dir with the shims already running; stop with SIGTERM.
    """
    settings: Settings = ctx.obj
    from cli.timeparse import duration_option

    with expected_errors():  # a bad option is one line, before anything starts
        interval = (
            0.0
            if checkpoint_interval == "0"
            else duration_option("--checkpoint-interval", checkpoint_interval).total_seconds()
        )
        metrics = _metrics_address(metrics_address, metrics_public)

    import asyncio

    from cli.command_server import CommandServer

    # Forked now, before the event loop and any thread exist: see cli/command_server.py.
    commands = CommandServer.fork(settings.state, ctx.find_root().command)

    async def work() -> None:
        from cli.bootstrap import wire
        from shim.recovery.supervisor import Supervisor

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signals.SIGTERM, signals.SIGINT, signals.SIGHUP):
            loop.add_signal_handler(sig, stop.set)  # a clean stop, not a cancellation

        def waiting(why: str) -> None:
            typer.echo(f"shimledger serve: waiting: {why}", err=True)

        async with wire(settings, sink="own", stop=stop, on_wait=waiting) as wiring:
            if not wiring.sink.serving:
                typer.echo("shimledger serve: stopped before the event sink was free", err=True)
                return
            ledger = wiring.ledger

            async def catch_up() -> None:
                try:
                    await ledger.catch_up()
                finally:  # the metrics follow the views (and say how far behind they are)
                    if exporter is not None:
                        await exporter.feed.refresh(ledger.store, ledger.views)

            supervisor = Supervisor(wiring.manager, wiring.shims, catch_up)
            try:
                for entry in await supervisor.start():
                    line = f"{entry.namespace}/{entry.task_id}: {entry.action.value} {entry.detail}"
                    typer.echo(f"reconciled {line}".rstrip(), err=True)
                handed = commands.serve_commands()
                typer.echo(
                    f"shimledger serve: events on {wiring.sink.path}, watching "
                    f"{len(supervisor.watched)} shim(s), "
                    + (
                        f"commands on {settings.state}/{CONTROL_SOCKET}"
                        if handed
                        else "no commands handed over (the command server is gone)"
                    ),
                    err=True,
                )
                checkpoints = Checkpoints(settings, wiring.ledger, interval, stop)
                async with asyncio.TaskGroup() as group:
                    group.create_task(checkpoints.run())
                    await supervisor.run(stop)
            finally:
                await supervisor.aclose()
        typer.echo("shimledger serve: stopped; containers keep running", err=True)

    exporter: MetricsServer | None = None
    try:
        with expected_errors():  # a port taken is one line, and nothing else is started
            exporter = _start_metrics(metrics, settings)
        run_command(work, settings)  # an SQLite fault then names the file of this root
    finally:
        if exporter is not None:
            exporter.close()
        commands.stop()


def _metrics_address(text: str | None, public: bool) -> MetricsAddress | None:
    """The checked --metrics-address (cli/metrics_address.py), or None: no metrics."""
    if text is None:
        if public:
            raise InvalidArgumentError("--metrics-public needs --metrics-address")
        return None
    from cli.metrics_address import parse_metrics_address

    return parse_metrics_address(text, public=public)


def _start_metrics(address: MetricsAddress | None, settings: Settings) -> MetricsServer | None:
    """Listen on the address, said on stderr before serve is ready (the port, if 0 was
    asked, is found there). Only here is prometheus_client imported: after the command
    server's fork, so no forked process holds its threads or its port."""
    if address is None:
        return None
    from cli.metrics_export import MetricsFeed, serve_metrics
    from domain.values import Whose

    try:
        # This serve's own tasks (its node and state dir): each serve of a fleet exports
        # its own, and Prometheus' instance label tells them apart without double counting.
        exporter = serve_metrics(address, MetricsFeed(Whose.owner(settings.owner)))
    except OSError as exc:
        raise UnavailableError(
            f"--metrics-address {address.host}:{address.port}: cannot listen there: "
            f"{exc.strerror or exc}"
        ) from None
    typer.echo(f"shimledger serve: metrics on {exporter.url}", err=True)
    return exporter


class Checkpoints:
    """serve's periodic signed heads (cli/ledger_cmds.py signs one on demand).

    A fault (the store down, a key it cannot read) is said in one line and tried again at
    the next tick: the history is still recorded, only its next signature waits.
    """

    def __init__(self, settings: Settings, ledger: Ledger, interval: float, stop: Event) -> None:
        self._settings = settings
        self._ledger = ledger
        self._interval = interval
        self._stop = stop

    async def run(self) -> None:
        import asyncio

        if self._interval <= 0:
            return
        while True:
            try:
                await asyncio.wait_for(self._stop.wait(), self._interval)
            except TimeoutError:
                await self.sign()
                continue
            await self.sign()  # once more on stop: the tail is signed before serve goes
            return

    async def sign(self) -> None:
        from cli.bootstrap import cli_cause
        from cli.ledger_cmds import ledger_service
        from domain.errors import ShimledgerError

        service = ledger_service(self._settings, self._ledger.store, create_key=True)
        try:
            signed = await service.checkpoint(cli_cause(self._settings.node))
        except (ShimledgerError, OSError) as exc:
            typer.echo(f"shimledger serve: checkpoint not signed: {exc}", err=True)
            return
        except Exception as exc:  # a store's own fault (sqlite3, psycopg): serve goes on
            logger.debug("checkpoint failed", exc_info=True)
            typer.echo(f"shimledger serve: checkpoint not signed: {type(exc).__name__}: {exc}",
                       err=True)  # fmt: skip
            return
        if signed is not None:
            head, _ = signed
            logger.info(
                "signed the ledger's head: %d events up to position %d",
                head.tree_size,
                head.position,
            )


def register(app: typer.Typer) -> None:
    app.command()(serve)
