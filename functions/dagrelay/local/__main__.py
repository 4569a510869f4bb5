"""``python -m dagrelay.local up | down | demo | worker`` (the stack starts its pull workers so)."""

from __future__ import annotations

from dagrelay.local.commands import app

app()
