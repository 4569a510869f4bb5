"""The dashboard's static files (``static/``): our own script and stylesheet, and the vendored
ELK layout library (see ``static/VENDORED.md``). Each is read once, hashed and gzipped once, and
served under a URL that carries its hash, so a browser may keep it for good."""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

STATIC = Path(__file__).with_name("static")
SERVED = {
    "elk.bundled.js": "text/javascript",
    "dashboard.js": "text/javascript",
    "style.css": "text/css",
}
FOREVER = "public, max-age=31536000, immutable"


@dataclass(frozen=True)
class Asset:
    name: str
    body: bytes
    gzipped: bytes
    mimetype: str
    sha256: str

    @property
    def version(self) -> str:
        return self.sha256[:16]


@cache
def asset(name: str) -> Asset | None:
    """The static file ``name``, or None if it is not one the dashboard serves."""
    if name not in SERVED:
        return None
    body = (STATIC / name).read_bytes()
    return Asset(
        name=name,
        body=body,
        gzipped=gzip.compress(body, compresslevel=9, mtime=0),
        mimetype=SERVED[name],
        sha256=hashlib.sha256(body).hexdigest(),
    )


def asset_url(base: str, name: str) -> str:
    found = asset(name)
    if found is None:
        raise KeyError(f"{name} is not a static file of the dashboard")
    return f"{base}/assets/{name}?v={found.version}"
