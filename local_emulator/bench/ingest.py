"""Ingestion's peak memory: ``python -m local_emulator.bench.ingest [--sizes 5,50,500]``.

For each size a sales CSV of about that many MB is generated into a temp directory; a fresh
Python process then validates it and writes it as Parquet (``dagrelay.ingest.stream.scan``, what
the validate and convert tasks run) and reports its RSS high-water mark
(``resource.getrusage``), next to its RSS after the imports. ``--old`` adds the former
whole-file path (``rules.validate`` on the file's bytes, then one Arrow table) for the sizes up
to 50 MB. Files are deleted afterwards. The streaming peak must stay flat as the file grows.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

HEADER = "sale_date,region,product,quantity,amount\n"
REGIONS = ("north", "south", "east", "west")
OLD_PATH_MAX_MB = 50

_CHILD = """
import json, resource, sys, time
from pathlib import Path
from dagrelay.ingest import load_sources, parquet, rules, stream
source = load_sources()["sales"]
path, mode = Path(sys.argv[1]), sys.argv[2]
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.monotonic()
if mode == "stream":
    rows = stream.scan(path, source, parquet_out=path.with_suffix(".parquet")).rows
else:
    checked = rules.validate(path.read_bytes(), source)
    parquet.to_table(checked, source)
    rows = checked.count
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"rows": rows, "s": time.monotonic() - started, "base_kb": base, "peak_kb": peak}))
"""


def generate(path: Path, megabytes: int, seed: int = 7) -> None:
    """About ``megabytes`` MB of valid sales rows for 2024-03, written a block at a time."""
    rng = random.Random(seed)  # noqa: S311 - test data, not cryptography
    block = "".join(
        f"2024-03-{rng.randint(1, 28):02d},{rng.choice(REGIONS)},item{rng.randint(1, 999)},"
        f"{rng.randint(1, 50)},{rng.randint(100, 99999) / 100:.2f}\n"
        for _ in range(20_000)
    ).encode()
    target = megabytes * 1_000_000
    with path.open("wb") as out:
        out.write(HEADER.encode())
        written = 0
        while written < target:
            out.write(block)
            written += len(block)


def measure(path: Path, mode: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), mode],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def peaks(sizes: list[int], *, old: bool = False) -> list[dict[str, float | str]]:
    """One row per (size, path): file MB, rows, seconds, RSS after imports and peak RSS (MB)."""
    rows: list[dict[str, float | str]] = []
    with tempfile.TemporaryDirectory(prefix="dagrelay-bench-ingest-") as tmp:
        for size in sizes:
            path = Path(tmp) / f"sales_{size}mb_2024-03.csv"
            generate(path, size)
            modes = ["stream"] + (["whole file"] if old and size <= OLD_PATH_MAX_MB else [])
            for mode in modes:
                result = measure(path, "stream" if mode == "stream" else "old")
                rows.append(
                    {
                        "path": mode,
                        "file_mb": round(path.stat().st_size / 1e6),
                        "rows": int(result["rows"]),
                        "seconds": round(result["s"], 2),
                        "base_mb": round(result["base_kb"] / 1024),
                        "peak_mb": round(result["peak_kb"] / 1024),
                    }
                )
            path.unlink()
            path.with_suffix(".parquet").unlink(missing_ok=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="5,50,500", help="file sizes in MB, comma-separated")
    parser.add_argument("--old", action="store_true", help="also measure the whole-file path")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    table = Table(title="ingestion peak memory (validate + Parquet, one process)")
    for column in ("path", "file MB", "rows", "seconds", "RSS after imports MB", "peak RSS MB"):
        table.add_column(column, justify="left" if column == "path" else "right")
    for row in peaks(sizes, old=args.old):
        table.add_row(*(f"{v:,}" if isinstance(v, int) else str(v) for v in row.values()))
    Console().print(table)


if __name__ == "__main__":
    main()
