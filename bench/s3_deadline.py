"""How long the archive takes to give up on an S3 endpoint that accepts connections and never answers.

A loopback socket accepts every connection and sends nothing (a stopped or wedged S3 endpoint behind a
load balancer looks like this). ``archive_raw`` runs against it with the given deadlines; the script
prints the seconds until the ``ArchiveError`` (which carries the S3 code) and when each connection was
opened. Results go to ``bench/results/s3_deadline.json``.

    .venv/bin/python bench/s3_deadline.py                       # the params.yaml defaults
    .venv/bin/python bench/s3_deadline.py --connect 1 --read 1 --attempts 2
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from autotrader.archive import ArchiveError, Deadlines, archive_raw  # noqa: E402
from autotrader.params import ArchiveParams  # noqa: E402
from tests.s3server import FAKE_CREDENTIALS  # noqa: E402
from tests.test_archive import write_sim_raw  # noqa: E402


def main() -> int:
    defaults = ArchiveParams()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connect", type=float, default=defaults.connect_timeout_s)
    parser.add_argument("--read", type=float, default=defaults.read_timeout_s)
    parser.add_argument("--attempts", type=int, default=defaults.max_attempts)
    args = parser.parse_args()

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    opened: list[float] = []
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            conn, _ = server.accept()
            opened.append(time.monotonic())
            held.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    os.environ.update(FAKE_CREDENTIALS)
    os.environ["AUTOTRADER_S3_ENDPOINT_URL"] = f"http://127.0.0.1:{server.getsockname()[1]}"
    deadlines = Deadlines(args.connect, args.read, args.attempts)
    with tempfile.TemporaryDirectory() as tmp:
        raw = write_sim_raw(Path(tmp) / "raw", days=1)
        started = time.monotonic()
        try:
            archive_raw(raw, "s3://stalled-bucket/bars", show_progress=False, deadlines=deadlines)
        except ArchiveError as exc:
            message = str(exc)
        else:
            message = "no error (unexpected)"
        elapsed = time.monotonic() - started
    result = {
        "deadlines": deadlines.describe(),
        "seconds_to_fail": round(elapsed, 2),
        "connections_opened_at_s": [round(t - started, 2) for t in opened],
        "error": message,
        "load_average": os.getloadavg(),
    }
    out = REPO / "bench" / "results" / "s3_deadline.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
