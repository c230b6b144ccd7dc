"""The export stream's throughput: `events --after P --format cloudevents` against
`events --json` over the same events of the same store, in the same run (issue 14).

Both are whole `shimledger` processes writing to /dev/null, interleaved, medians of
``--runs``; the ratio is the JSON run's time over the CloudEvents run's (1.0: as fast).
The store is bench/history_stores.py's (short lives of realistic size, stamped days
apart); its event index is built once before anything is timed, as any first read does.

    python bench/export_stream.py --events 1000000 --runs 3
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from history_stores import build_history  # noqa: E402
from report import Figure, Table, round_robin  # noqa: E402

SHIMLEDGER = str(Path(sys.executable).with_name("shimledger"))


def command(root: Path, *args: str) -> list[str]:
    return [SHIMLEDGER, "--root", str(root), "--state", str(root / "state"), "events", *args]


def run(argv: list[str]) -> None:
    env = dict(os.environ, SHIMLEDGER_NO_SERVE="1")
    with open(os.devnull, "wb") as sink:
        subprocess.run(argv, stdout=sink, check=True, env=env)


def lines(argv: list[str]) -> int:
    out = subprocess.run(argv, capture_output=True, check=True).stdout
    return out.count(b"\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--after", type=int, default=0, help="P: resume after this position")
    args = parser.parse_args()
    table = Table()
    with tempfile.TemporaryDirectory(prefix="bench-export-") as work:
        root = Path(work)
        head = build_history(root, args.events)
        run(command(root, "--after", str(head)))  # builds the event index, untimed
        json_argv = command(root, "--json", "--after", str(args.after))
        cloud_argv = command(root, "--format", "cloudevents", "--after", str(args.after))
        count = lines(cloud_argv)
        assert count == lines(json_argv) == head - args.after, (count, head)
        load = os.getloadavg()[0]
        medians = round_robin({"json": lambda: run(json_argv),
                               "cloudevents": lambda: run(cloud_argv)}, args.runs)  # fmt: skip
        table.add(Figure("events --format cloudevents", f"{count:,} events",
                         medians["cloudevents"], "events --json", medians["json"],
                         events=count))  # fmt: skip
        table.note(f"load average (1 min) {load:.2f} before, {os.getloadavg()[0]:.2f} after; "
                   f"{args.runs} interleaved runs each, medians")  # fmt: skip
    print()
    print(table.render())
    for note in table.notes:
        print(note)


if __name__ == "__main__":
    main()
