"""A sandcron job in Python: a WASI 0.2 component built by componentize-py.

Build and run with `scripts/build-guests.sh python` and then
`wasmtime run --env SANDCRON_JOB=demo --env SANDCRON_TICK=2026-11-22T00:00:00Z target/guests/python.wasm`.

componentize-py runs this module's top level at build time and snapshots the
result, so the work happens in `Run.run`, which the host calls through the
exported `wasi:cli/run` interface. `os.environ` and `sys.argv` are refreshed
from WASI before that call, so they hold the run's values, not the build's.
"""

import json
import os
import sys

from wit_world import exports


class Run(exports.Run):
    def run(self) -> None:
        job = os.environ.get("SANDCRON_JOB", "")
        tick = os.environ.get("SANDCRON_TICK", "")
        print(f"hello from python: job={job} tick={tick}")
        version = sys.version.split()[0]
        print(f"python {version} on {sys.platform}")
        # The run's result: one stdout line `::sandcron::result <json>` (JSON at most 64 KiB, on one line).
        attempt = int(os.environ.get("SANDCRON_ATTEMPT", "1"))
        print("::sandcron::result " + json.dumps({"lang": "python", "python": version, "attempt": attempt}, separators=(",", ":")))
