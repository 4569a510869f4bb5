"""`make dist`: the sdist and the wheel of the checkout, byte for byte the same on every build of
a commit, whatever the clone's file times, modes or umask.

1. `python -m build --sdist` (isolated, with SOURCE_DATE_EPOCH: the last commit's time unless set).
2. The sdist is rewritten canonically: members sorted, every time SOURCE_DATE_EPOCH, owner root,
   modes 0644 / 0755, the gzip header without a name or time.
3. The wheel is built from that sdist, unpacked (so it sees only the canonical modes); wheel
   entries take their dates from SOURCE_DATE_EPOCH.

    python .ci/dist.py [--outdir dist] [--source .]
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outdir", type=Path, default=REPO / "dist")
    parser.add_argument("--source", type=Path, default=REPO)
    args = parser.parse_args()
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH") or last_commit_time(args.source))
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(epoch)}
    args.outdir.mkdir(parents=True, exist_ok=True)
    for old in [*args.outdir.glob("dagrelay-*.whl"), *args.outdir.glob("dagrelay-*.tar.gz")]:
        old.unlink()
    with tempfile.TemporaryDirectory(prefix="dagrelay-dist-") as work:
        raw = Path(work) / "raw"
        build(["--sdist", "--outdir", str(raw), str(args.source)], env)
        (built,) = raw.glob("*.tar.gz")
        sdist = args.outdir / built.name
        sdist.write_bytes(canonical_sdist(built.read_bytes(), epoch))
        unpacked = Path(work) / "unpacked"
        with tarfile.open(sdist) as archive:
            archive.extractall(unpacked, filter="data")
        (tree,) = unpacked.iterdir()
        build(["--wheel", "--outdir", str(args.outdir), str(tree)], env)
    for path in sorted([*args.outdir.glob("dagrelay-*.whl"), sdist]):
        print(path)  # noqa: T201


def last_commit_time(source: Path) -> str:
    return subprocess.run(  # noqa: S603
        ["git", "-C", str(source), "log", "-1", "--format=%ct"],  # noqa: S607
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def build(arguments: list[str], env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "-m", "build", *arguments], check=True, env=env)  # noqa: S603


def canonical_sdist(data: bytes, epoch: int) -> bytes:
    """The same files, with nothing of the machine that packed them."""
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as source,
        tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as target,
    ):
        for member in sorted(source.getmembers(), key=lambda m: m.name):
            member.mtime = epoch
            member.uid = member.gid = 0
            member.uname = member.gname = "root"
            member.mode = 0o755 if member.isdir() or member.mode & 0o111 else 0o644
            member.pax_headers = {}
            content = source.extractfile(member) if member.isfile() else None
            target.addfile(member, content)
    packed = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=packed, mtime=epoch) as stream:
        stream.write(out.getvalue())
    return packed.getvalue()


if __name__ == "__main__":
    main()
