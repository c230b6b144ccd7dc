#!/usr/bin/env python3
"""Whole-process wall time of one container run, as ratios against the engine floor.

Measured in the same run, interleaved round-robin so that noise hits every contender
alike, and reported as medians (the machine is shared):

  runc run              the engine floor: runc alone on the same bundle
  ctr run --rm          containerd's own client, through a containerd started here
  shimledger run --rm   this project, through containerd-shim-runc-v2, history included
  python -c pass        the interpreter's start-up floor, for scale

    .venv/bin/python bench/run.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))

from busybox_bundle import make_bundle  # noqa: E402

from adapters.shim_binary import search_path  # noqa: E402

PATH = search_path()
SHIMLEDGER = str(Path(sys.executable).with_name("shimledger"))


def as_installed() -> None:
    """Time Python as a user's machine runs it: with cached bytecode.

    With PYTHONDONTWRITEBYTECODE set (some shells here set it), every run would compile
    each module from source again, about 60-90 ms that no installed copy pays.
    """
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    packages = [str(ROOT / name) for name in ("adapters", "cli", "domain", "projections", "shim")]
    subprocess.run([sys.executable, "-m", "compileall", "-q", *packages], check=True)


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    result = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({result.returncode}): {result.stderr.decode()}")
    return elapsed


@contextmanager
def containerd(work: Path) -> Iterator[str]:
    """A private containerd (own root, state, socket; CRI off), stopped afterwards."""
    work.mkdir(parents=True, exist_ok=True)
    address = str(work / "containerd.sock")
    config = work / "config.toml"
    config.write_text(
        "version = 2\n"
        f'root = "{work}/root"\nstate = "{work}/state"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\n  address = "{address}"\n'
        f'[ttrpc]\n  address = "{address}.ttrpc"\n'
    )
    log = open(work / "containerd.log", "wb")  # noqa: SIM115 - closed below
    daemon = subprocess.Popen(["containerd", "--config", str(config)], stdout=log, stderr=log,
                              env=dict(os.environ, PATH=PATH))  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.socket(socket.AF_UNIX) as probe:
                    probe.connect(address)
                break
            except OSError:
                if time.monotonic() > deadline or daemon.poll() is not None:
                    log_path = work / "containerd.log"
                    raise SystemExit(f"containerd did not start; see {log_path}") from None
                time.sleep(0.05)
        yield address
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("the benchmark runs containers: run it as root")
    as_installed()

    work = Path(tempfile.mkdtemp(prefix="sl-bench-", dir="/tmp"))
    try:
        bundle = make_bundle(work / "bundle", ["true"])
        env = dict(os.environ, PATH=PATH, SHIMLEDGER_ROOT=str(work / "sl-root"),
                   SHIMLEDGER_STATE=str(work / "sl-state"))  # fmt: skip
        counter = iter(range(1_000_000))

        def run_runc() -> float:
            return timed(["runc", "--root", str(work / "runc"), "run", "--bundle", str(bundle),
                          f"r{next(counter)}"], env)  # fmt: skip

        def run_shimledger() -> float:
            return timed([SHIMLEDGER, "run", "--rm", "--bundle", str(bundle),
                          f"s{next(counter)}"], env)  # fmt: skip

        def run_python() -> float:
            return timed([sys.executable, "-c", "pass"], env)

        with containerd(work / "containerd") as address:

            def run_ctr() -> float:
                return timed(["ctr", "--address", address, "run", "--rm", "--rootfs",
                              str(bundle / "rootfs"), f"c{next(counter)}", "/bin/true"],
                             env)  # fmt: skip

            contenders: dict[str, Callable[[], float]] = {
                "runc run": run_runc,
                "ctr run --rm (containerd)": run_ctr,
                "shimledger run --rm": run_shimledger,
                "python -c pass": run_python,
            }
            for run in contenders.values():  # warm caches once, unmeasured
                run()
            samples: dict[str, list[float]] = {name: [] for name in contenders}
            for _ in range(args.runs):
                for name, run in contenders.items():
                    samples[name].append(run())

        floor = statistics.median(samples["runc run"])
        ctr = statistics.median(samples["ctr run --rm (containerd)"])
        print(f"median of {args.runs} runs each, /bin/true in a busybox bundle, "
              f"{os.cpu_count()} cores\n")  # fmt: skip
        print(f"{'command':28} {'median':>9} {'x runc':>8} {'x ctr':>7}")
        for name, values in samples.items():
            median = statistics.median(values)
            print(f"{name:28} {median * 1000:7.1f}ms {median / floor:8.2f} {median / ctr:7.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
