"""A team's project in the archive: requirements merged with dagrelay's pins, conflicts refused
by name; the modules the function imports; the scaffold's names."""

from __future__ import annotations

from pathlib import Path

import pytest

from dagrelay.errors import ConfigError
from dagrelay.ops.project import Project, merge_requirements
from dagrelay.scaffold import project_name

OURS = ["SQLAlchemy==2.1.9", "cloud-sql-python-connector[pg8000]==1.23.0", "PyYAML==6.0.3"]


def theirs(*lines: str) -> list[str]:
    return [f"requirements.txt:{n}:{line}" for n, line in enumerate(lines, start=1)]


def test_merge_adds_the_teams_pins_sorted() -> None:
    merged = merge_requirements(
        OURS,
        theirs(
            "requests==2.32.3",
            "sqlalchemy>=2.0",  # admits dagrelay's pin: dagrelay's stays
            "cloud-sql-python-connector[asyncpg]==1.23.0",
            "dagrelay==0.1.0",  # the archive holds dagrelay itself
            'tomli==2.0.1; python_version < "3.11"',
        ),
    )
    assert merged == [
        "cloud-sql-python-connector[asyncpg,pg8000]==1.23.0",
        "PyYAML==6.0.3",
        "requests==2.32.3",
        "SQLAlchemy==2.1.9",
        'tomli==2.0.1; python_version < "3.11"',
    ]


def test_conflicts_and_unpinned_requirements_are_refused_by_name() -> None:
    with pytest.raises(ConfigError) as caught:
        merge_requirements(OURS, theirs("sqlalchemy==1.4.52", "requests>=2", "pyyaml<6"))
    assert str(caught.value).split("; ") == [
        "requirements.txt:1: sqlalchemy==1.4.52 conflicts with dagrelay's SQLAlchemy==2.1.9",
        "requirements.txt:2: requests>=2 is not pinned with == (the archive must be reproducible)",
        "requirements.txt:3: pyyaml<6 conflicts with dagrelay's PyYAML==6.0.3",
    ]


def test_project_files_and_modules(tmp_path: Path) -> None:
    for name in (
        "handlers/__init__.py",
        "handlers/acme/export.py",
        "pipelines/etl.py",
        "pipelines/etl.yaml",
        "sql/merge.sql",
        "handlers/__pycache__/x.py",
        "pipelines/tests/test_x.py",
    ):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    (tmp_path / "requirements.txt").write_text("# pins\nrequests==2.32.3  # http\n\n")
    project = Project.at(tmp_path)
    assert sorted(project.files()) == [
        "handlers/__init__.py",
        "handlers/acme/export.py",
        "pipelines/etl.py",
        "pipelines/etl.yaml",
        "sql/merge.sql",
    ]
    assert project.modules() == ["handlers", "handlers.acme.export", "pipelines.etl"]
    assert project.requirements() == ["requirements.txt:2:requests==2.32.3"]
    assert "pipelines_dir: sql" in project.settings_yaml()


def test_pip_options_are_refused(tmp_path: Path) -> None:
    (tmp_path / "handlers").mkdir()
    (tmp_path / "requirements.txt").write_text("-e ../lib\n")
    with pytest.raises(ConfigError, match=r"requirements.txt:1: pip options \(-e\)"):
        Project.at(tmp_path).requirements()


def test_not_a_project(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="`dagrelay init DIR` makes a project"):
        Project.at(tmp_path)


@pytest.mark.parametrize(
    ("directory", "expected"),
    [("acme", "acme"), ("Data-Team 2", "data_team_2"), ("42x", "p_42x"), ("---", "project")],
)
def test_project_name(tmp_path: Path, directory: str, expected: str) -> None:
    assert project_name(tmp_path / directory) == expected
