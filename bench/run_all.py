"""Run every benchmark, one process each, and print one summary table of goals and results.

``python -m bench.run_all [--small] [--no-postgres]``

Each benchmark prints its own tables as it goes (and the command that reproduces it alone);
the summary at the end has one line per goal: the goal, this run's figure, PASS / FAIL (or
"-" where a figure has no goal and is reported for context).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import ROOT, Row, command, parser, table

BENCHMARKS = ("bench.api_calls", "bench.latency", "bench.ack", "bench.memory")


def main() -> None:
    p = parser(__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--no-postgres", action="store_true", help="bench.ack on SQLite only")
    args = p.parse_args()
    rows: list[Row] = []
    failed: list[str] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="itsm-bench-") as folder:
        for module in BENCHMARKS:
            out = Path(folder) / f"{module}.json"
            extra = ["--no-postgres"] if args.no_postgres and module == "bench.ack" else []
            argv = [sys.executable, "-m", module, *(["--small"] if args.small else [])]
            t0 = time.monotonic()
            code = subprocess.call([*argv, *extra, "--json", str(out)], cwd=ROOT)
            print(f"({module}: {time.monotonic() - t0:.0f}s)\n", flush=True)
            if code != 0 or not out.exists():
                failed.append(module)
                rows.append(Row(module.split(".")[1], "the benchmark itself", "runs",
                                f"exit status {code}", False))  # fmt: skip
                continue
            rows.extend(Row(**r) for r in json.loads(out.read_text()))
    verdict = {True: "PASS", False: "FAIL", None: "-"}
    print(
        table(
            ["benchmark", "metric", "goal", "result", ""],
            [[r.benchmark, r.metric, r.goal, r.result, verdict[r.passed]] for r in rows],
            f"Summary ({'--small' if args.small else 'full size'}, "
            f"{time.monotonic() - started:.0f}s)",
        )
    )
    print(f"\nreproduce: {command('bench.run_all', args.small)}")
    if failed:
        print(f"benchmarks that did not finish: {', '.join(failed)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
