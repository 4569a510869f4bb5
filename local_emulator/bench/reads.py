"""A mapped task's gs:// list: the router's peak memory reading it.
``python -m local_emulator.bench.reads [--mb 200] [--old]``.

A JSON-lines object of about ``--mb`` MB (1 KB lines) is uploaded to a storage emulator of its
own; a fresh Python process reads it the way the engine does (``maps.read_json_lines``) and
reports its RSS high-water mark (``VmHWM`` of /proc/self/status, Linux only) next to the same
mark when idle (after the imports and a one-line read, which loads the client). Two reads:
``max_items`` 1,024 (stops at item 1,025) and 1,000,000 (stops at ``MAX_LIST_BYTES``);
``--old`` adds the former path (the whole object downloaded as text, then parsed). Target: the
streamed peaks within +50 MB of idle. Everything it starts it stops; the temp dir is deleted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from dagrelay.local import gcs, processes

BUCKET = "bench-reads"
TARGET_MB_OVER_IDLE = 50

_CHILD = """
import json, sys, time
from pathlib import Path
from dagrelay.engine import maps
def hwm_kb():  # this process's own high-water mark (ru_maxrss keeps the parent's across exec)
    status = Path("/proc/self/status").read_text().splitlines()
    return int(next(line for line in status if line.startswith("VmHWM:")).split()[1])
from dagrelay.local import gcs
client = gcs.storage_client("bench")
ref, mode, max_items = sys.argv[1], sys.argv[2], int(sys.argv[3])
maps.read_json_lines(ref.rsplit("/", 1)[0] + "/one.jsonl", 10, client)
idle = hwm_kb()
started = time.monotonic()
outcome = "read"
try:
    if mode == "old":
        bucket, _, name = ref.removeprefix("gs://").partition("/")
        text = client.bucket(bucket).blob(name).download_as_text(timeout=300)
        items = [json.loads(line) for line in text.splitlines() if line.strip()]
        outcome = f"{len(items)} items, then refused"
    else:
        maps.read_json_lines(ref, max_items, client)
except maps.ListTooLarge as exc:
    outcome = str(exc)
peak = hwm_kb()
print(json.dumps({"s": time.monotonic() - started, "idle_kb": idle, "peak_kb": peak,
                  "outcome": outcome}))
"""


def generate(path: Path, megabytes: int) -> int:
    """About ``megabytes`` MB of 1 KB JSON lines (200 MB: 200,000 lines); how many."""
    line = json.dumps({"uri": "gs://b/" + "f" * 990}) + "\n"
    count = megabytes * 1_000_000 // len(line)
    with path.open("w", encoding="utf-8") as out:
        for _ in range(count // 1000):
            out.write(line * 1000)
    return count // 1000 * 1000


@dataclass(frozen=True)
class Read:
    mode: str  # stream: read_json_lines; old: the whole object, then parsed
    max_items: int
    idle_mb: float
    peak_mb: float
    seconds: float
    outcome: str

    @property
    def over_idle_mb(self) -> float:
        return round(self.peak_mb - self.idle_mb, 1)


def measure(ref: str, mode: str, max_items: int, env: dict[str, str]) -> Read:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, ref, mode, str(max_items)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    got = json.loads(done.stdout.strip().splitlines()[-1])
    return Read(
        mode,
        max_items,
        round(got["idle_kb"] / 1024, 1),
        round(got["peak_kb"] / 1024, 1),
        round(got["s"], 2),
        str(got["outcome"]),
    )


def peaks(megabytes: int, *, old: bool = False) -> list[Read]:
    """One read per (mode, max_items) of one object of about ``megabytes`` MB."""
    with tempfile.TemporaryDirectory(prefix="dagrelay-bench-reads-") as tmp:
        port = processes.free_port()
        emulator = gcs.start_storage_emulator(port, Path(tmp) / "data")
        host = f"http://127.0.0.1:{port}"
        previous = os.environ.get("STORAGE_EMULATOR_HOST")
        os.environ["STORAGE_EMULATOR_HOST"] = host
        try:
            ref = upload(Path(tmp), megabytes)
            runs = [("stream", 1024), ("stream", 1_000_000)] + ([("old", 1024)] if old else [])
            env = {**os.environ, "STORAGE_EMULATOR_HOST": host}
            return [measure(ref, mode, max_items, env) for mode, max_items in runs]
        finally:
            if previous is None:
                os.environ.pop("STORAGE_EMULATOR_HOST", None)
            else:
                os.environ["STORAGE_EMULATOR_HOST"] = previous
            emulator.stop()


def upload(tmp: Path, megabytes: int) -> str:
    """The object (and a one-line one for the idle read) in the emulator; its reference."""
    client = gcs.storage_client("bench")
    gcs.create_buckets(client, [BUCKET])
    path = tmp / "items.jsonl"
    generate(path, megabytes)
    client.bucket(BUCKET).blob("items.jsonl").upload_from_filename(str(path), timeout=600)
    client.bucket(BUCKET).blob("one.jsonl").upload_from_string("1\n")
    path.unlink()
    return f"gs://{BUCKET}/items.jsonl"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--old", action="store_true", help="also the former whole-object path")
    args = parser.parse_args(argv)
    reads = peaks(args.mb, old=args.old)
    table = Table(title=f"a gs:// list of {args.mb} MB: the reading process's RSS")
    for column in ("path", "max_items", "idle MB", "peak MB", "over idle MB", "s", "outcome"):
        table.add_column(column)
    for r in reads:
        values = (r.mode, r.max_items, r.idle_mb, r.peak_mb, r.over_idle_mb, r.seconds, r.outcome)
        table.add_row(*(str(v) for v in values))
    ok = all(r.over_idle_mb <= TARGET_MB_OVER_IDLE for r in reads if r.mode == "stream")
    console = Console()
    console.print(table)
    console.print(f"streamed peaks within +{TARGET_MB_OVER_IDLE} MB of idle: {ok}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
