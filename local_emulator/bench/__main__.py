"""``python -m local_emulator.bench [--quick] [--out bench-results.json]``."""

from __future__ import annotations

from local_emulator.bench.command import app

if __name__ == "__main__":
    app()
