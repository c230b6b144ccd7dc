#!/usr/bin/env python3
"""ttrpc unary calls per second, as ratios against a raw asyncio echo (the Python floor).

Both contenders run over a Unix socket in a temporary directory, client and server in this
one process and event loop, so a figure is the whole cost of a call on both sides:

  ttrpc   TtrpcClient -> TtrpcServer, method shimledger.bench.Echo/Echo, a BytesValue
          echoed back: framing, envelope, protobuf, a handler task per call
  echo    a 4-byte length prefix and the same payload bytes, echoed back by a bare
          asyncio stream server; the client pairs replies with calls in order

at payload sizes 64 B, 4 KiB and 256 KiB, one call at a time and with 16 in flight on the
one connection. Every reply is checked against its payload. Samples are interleaved
round-robin so that noise hits both alike; the figures are medians of --runs.

    .venv/bin/python bench/ttrpc_calls.py [--runs N] [--sample-seconds S]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from google.protobuf.wrappers_pb2 import BytesValue  # noqa: E402

from adapters.ttrpc.client import TtrpcClient  # noqa: E402
from adapters.ttrpc.server import Metadata, TtrpcServer  # noqa: E402

SERVICE = "shimledger.bench.Echo"
SIZES = [64, 4 * 1024, 256 * 1024]
IN_FLIGHT = [1, 16]
CALL_TIMEOUT = 30.0

Call = Callable[[bytes], Awaitable[bytes]]


# --- the floor: a length-prefixed echo on bare asyncio streams ----------------------------


async def _echo_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
        while True:
            prefix = await reader.readexactly(4)
            writer.write(prefix + await reader.readexactly(int.from_bytes(prefix, "big")))
            await writer.drain()
    writer.close()


class EchoClient:
    """One connection; replies come back in request order, so a FIFO pairs them."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._waiting: collections.deque[asyncio.Future[bytes]] = collections.deque()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                length = int.from_bytes(await self._reader.readexactly(4), "big")
                self._waiting.popleft().set_result(await self._reader.readexactly(length))

    async def call(self, payload: bytes) -> bytes:
        future = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        self._writer.write(len(payload).to_bytes(4, "big") + payload)
        await self._writer.drain()
        return await future

    async def aclose(self) -> None:
        self._writer.close()
        await asyncio.wait([self._task])


@contextlib.asynccontextmanager
async def echo_contender(path: str) -> AsyncIterator[Call]:
    server = await asyncio.start_unix_server(_echo_connection, path=path)
    reader, writer = await asyncio.open_unix_connection(path)
    client = EchoClient(reader, writer)
    try:
        yield client.call
    finally:
        await client.aclose()
        server.close()
        await server.wait_closed()


# --- ttrpc -------------------------------------------------------------------------------


async def _echo_handler(request: BytesValue, metadata: Metadata) -> BytesValue:
    return request


@contextlib.asynccontextmanager
async def ttrpc_contender(path: str) -> AsyncIterator[Call]:
    server = TtrpcServer()
    server.register(SERVICE, "Echo", BytesValue, _echo_handler)
    await server.start_unix(path)
    client = await TtrpcClient.connect(path)

    async def call(payload: bytes) -> bytes:
        reply = await client.call(
            SERVICE, "Echo", BytesValue(value=payload), BytesValue, timeout=CALL_TIMEOUT
        )
        return reply.value

    try:
        yield call
    finally:
        await client.aclose()
        await server.aclose()


# --- measuring ---------------------------------------------------------------------------


async def calls_per_second(call: Call, payload: bytes, calls: int, in_flight: int) -> float:
    """Rate of ``calls`` echoes, ``in_flight`` of them outstanding at any time."""
    remaining = calls

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            if await call(payload) != payload:
                raise SystemExit("an echo came back different")

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return calls / (time.perf_counter() - start)


@dataclass(frozen=True)
class Config:
    size: int
    in_flight: int

    @property
    def label(self) -> str:
        size = f"{self.size // 1024} KiB" if self.size >= 1024 else f"{self.size} B"
        return f"{size:>7}  {self.in_flight:>9}"


async def run(runs: int, sample_seconds: float) -> None:
    configs = [Config(size, n) for size in SIZES for n in IN_FLIGHT]
    with tempfile.TemporaryDirectory(prefix="sl-ttrpc-bench-", dir="/tmp") as work:
        async with (
            ttrpc_contender(os.path.join(work, "ttrpc.sock")) as ttrpc,
            echo_contender(os.path.join(work, "echo.sock")) as echo,
        ):
            contenders = {"ttrpc": ttrpc, "echo": echo}
            # Calibrate (and warm up, unmeasured): as many calls per sample as ttrpc, the
            # slower one, makes in about sample_seconds; both contenders get that count.
            counts: dict[Config, int] = {}
            for config in configs:
                payload = os.urandom(config.size)
                await calls_per_second(echo, payload, 50, config.in_flight)
                rate = await calls_per_second(ttrpc, payload, 400, config.in_flight)
                counts[config] = max(50, int(rate * sample_seconds))
            samples = {(c, name): [] for c in configs for name in contenders}
            for _ in range(runs):
                for config in configs:
                    payload = os.urandom(config.size)
                    for name, call in contenders.items():
                        rate = await calls_per_second(
                            call, payload, counts[config], config.in_flight
                        )
                        samples[(config, name)].append(rate)

    print(
        f"median of {runs} runs, about {sample_seconds}s a sample, one process and event loop "
        f"(client and server), Python {sys.version.split()[0]}, {os.cpu_count()} cores\n"
    )
    print(f"{'payload':>7}  {'in flight':>9}  {'calls':>6}  {'ttrpc calls/s':>13}  "
          f"{'echo calls/s':>12}  {'ttrpc/echo':>10}")  # fmt: skip
    for config in configs:
        t = statistics.median(samples[(config, "ttrpc")])
        e = statistics.median(samples[(config, "echo")])
        print(f"{config.label}  {counts[config]:>6}  {t:>13,.0f}  {e:>12,.0f}  {t / e:>10.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--sample-seconds", type=float, default=0.4)
    args = parser.parse_args()
    asyncio.run(run(args.runs, args.sample_seconds))


if __name__ == "__main__":
    main()
