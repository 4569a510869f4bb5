"""dagrelay: a serverless, database-driven DAG engine for Google Cloud."""

from __future__ import annotations


def __getattr__(name: str) -> str:
    """``dagrelay.__version__``: read from the package metadata (pyproject's ``version``, its
    one source) when asked, so importing dagrelay never pays for it. The function archive holds
    the package without its metadata: there the version is ``0+unknown``."""
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import metadata  # noqa: PLC0415

    try:
        return metadata.version(__name__)
    except metadata.PackageNotFoundError:
        return "0+unknown"
