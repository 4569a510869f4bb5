"""What of a team's project may go into the function archive: one explicit rule, decided per
file without following links, so ``build-function --list`` can say why each file is in or out.

- **In**: a regular file under ``handlers/``, ``pipelines/`` or ``sql/`` with one of
  ``PROJECT_SUFFIXES``, or a link to such a file inside the project (packed as that file).
- **Left out**, with the reason: hidden files and directories (a name starting with ``.``);
  files that look like credentials, by the name of the file or of its link's target (``.env*``,
  ``*.pem``, ``*.key``, ``*.p12``, ``*.pfx``) or by content (a JSON file holding a Google
  service-account key or user credential); a link to a directory (not followed); the project's
  tests and caches; files of other kinds.
- **Refused** (the build stops, naming it): a link whose target leaves the project (a file
  outside the project is never packed) and a Python file of ``handlers/`` or ``pipelines/``
  whose module name cannot be imported (``my-step.py``, ``2fa.py``, ``class.py``).

Credentials belong in Secret Manager, read at run time; a deployed archive is readable by
everyone who can read its bucket and the function's source.
"""

from __future__ import annotations

import fnmatch
import json
import keyword
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_DIRS = ("handlers", "pipelines", "sql")
MODULE_DIRS = ("handlers", "pipelines")  # the function imports their Python files
PROJECT_SUFFIXES = {".py", ".yaml", ".yml", ".sql", ".json"}
SKIPPED_DIRS = {
    "__pycache__": "compiled Python (the function compiles its own)",
    "tests": "the project's tests (not deployed)",
}
CREDENTIAL_NAMES = (".env*", "*.pem", "*.key", "*.p12", "*.pfx")
# A JSON file up to this size is parsed to look for a credential; a larger one is scanned for
# the keys a credential has (a service-account key is about 2.3 KB).
JSON_PARSE_LIMIT = 1024 * 1024
CREDENTIAL_KEYS = (b'"private_key"', b'"refresh_token"')
CHUNK = 1024 * 1024


@dataclass
class Selection:
    """The decision for every file of a project: ``files`` {name in the archive: real file},
    ``left_out`` {name: why}, ``refused`` (one sentence each, naming the file)."""

    files: dict[str, Path] = field(default_factory=dict)
    left_out: dict[str, str] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)


def select(root: Path) -> Selection:
    """Decide every file under the project's folders (``root`` already resolved)."""
    selection = Selection()
    for folder in PROJECT_DIRS:
        top = root / folder
        if top.is_symlink():
            _directory_link(root, top, selection)
        elif top.is_dir():
            _walk(root, top, selection)
    selection.files = dict(sorted(selection.files.items()))
    selection.left_out = dict(sorted(selection.left_out.items()))
    return selection


def _walk(root: Path, top: Path, selection: Selection) -> None:
    for here, directories, names in os.walk(top, followlinks=False):
        base = Path(here)
        for directory in sorted(directories):
            path = base / directory
            if path.is_symlink():
                _directory_link(root, path, selection)
            elif why := _skipped_directory(directory):
                selection.left_out[_name(root, path) + "/"] = why
        directories[:] = sorted(
            d for d in directories if not (base / d).is_symlink() and not _skipped_directory(d)
        )
        for name in sorted(names):
            _decide(root, base / name, selection)


def _skipped_directory(name: str) -> str | None:
    if name.startswith("."):
        return "a hidden directory"
    return SKIPPED_DIRS.get(name)


def _directory_link(root: Path, link: Path, selection: Selection) -> None:
    target = link.resolve()
    if not target.is_relative_to(root):
        selection.refused.append(_outside(root, link, target))
    else:
        selection.left_out[_name(root, link) + "/"] = (
            f"a link to a directory ({target}), not followed"
        )


def _decide(root: Path, path: Path, selection: Selection) -> None:
    name = _name(root, path)
    real = path.resolve() if path.is_symlink() else path
    if path.is_symlink() and not real.is_relative_to(root):
        selection.refused.append(_outside(root, path, real))
        return
    why = _left_out(path.name, real) or (_left_out(real.name, real) if real != path else None)
    if why is not None:
        selection.left_out[name] = why
        return
    bad = _bad_module(name)
    if bad is not None:
        selection.refused.append(bad)
        return
    selection.files[name] = real


def _left_out(filename: str, real: Path) -> str | None:
    """Why a file stays out of the archive, or None."""
    pattern = next((p for p in CREDENTIAL_NAMES if fnmatch.fnmatchcase(filename.lower(), p)), None)
    if pattern is not None:
        return f"looks like a credential ({pattern}); keep secrets in Secret Manager"
    if filename.startswith("."):
        return "a hidden file"
    return _by_kind(real)


def _by_kind(real: Path) -> str | None:
    if not real.exists():
        return "a broken link"
    if not real.is_file():
        return "not a regular file"
    if real.suffix not in PROJECT_SUFFIXES:
        return f"not one of {', '.join(sorted(PROJECT_SUFFIXES))}"
    return credential_json(real) if real.suffix == ".json" else None


def credential_json(path: Path) -> str | None:
    """Why a JSON file looks like a Google credential (by content), or None."""
    with path.open("rb") as stream:
        head = stream.read(JSON_PARSE_LIMIT + 1)
    if len(head) > JSON_PARSE_LIMIT:
        found = _contains_any(path, CREDENTIAL_KEYS)
        return f"holds {found.decode()}: looks like a credential" if found else None
    try:
        data = json.loads(head)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    if data.get("type") == "service_account" and "private_key" in data:
        return "a Google service-account key (type service_account with a private_key)"
    if data.get("type") == "authorized_user" and "refresh_token" in data:
        return "a Google user credential (type authorized_user with a refresh_token)"
    return None


def _contains_any(path: Path, needles: Iterable[bytes]) -> bytes | None:
    """The first of ``needles`` the file holds, read in chunks (a needle may span two)."""
    needles = tuple(needles)
    overlap = max(map(len, needles)) - 1
    tail = b""
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK):
            window = tail + chunk
            for needle in needles:
                if needle in window:
                    return needle
            tail = window[-overlap:]
    return None


def _bad_module(name: str) -> str | None:
    """A Python file of handlers/ or pipelines/ whose module name cannot be imported."""
    if not name.endswith(".py") or name.split("/", 1)[0] not in MODULE_DIRS:
        return None
    parts = name.removesuffix(".py").split("/")
    bad = [p for p in parts if not p.isidentifier() or keyword.iskeyword(p)]
    if not bad:
        return None
    return (
        f"{name}: {bad[0]!r} cannot be part of a module name (letters, digits and _, not "
        "starting with a digit, not a Python keyword); rename it so the function can import it"
    )


def module_name(name: str) -> str:
    """``handlers/acme/export.py`` -> ``handlers.acme.export`` (a package's ``__init__`` is the
    package)."""
    return name.removesuffix(".py").replace("/", ".").removesuffix(".__init__")


def _outside(root: Path, link: Path, target: Path) -> str:
    return (
        f"{_name(root, link)}: a link to {target}, outside the project {root}: refused (copy "
        "what the function needs into the project)"
    )


def _name(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()
