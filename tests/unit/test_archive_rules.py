"""The rule for what of a team's project goes into the function archive (ops/contents.py): links
out of the project refused by name, hidden and credential files left out with the reason,
module names Python cannot import refused, requirements refused with a readable reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dagrelay.errors import ConfigError
from dagrelay.ops import contents
from dagrelay.ops.project import Project, merge_requirements

SERVICE_ACCOUNT = {
    "type": "service_account",
    "project_id": "acme",
    "private_key_id": "0",
    "private_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    "client_email": "x@acme.iam.gserviceaccount.com",
}


def write(root: Path, name: str, text: str = "") -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "acme"
    write(root, "handlers/__init__.py")
    write(root, "handlers/export.py", "X = 1\n")
    write(root, "pipelines/etl.yaml", "pipeline: etl\n")
    write(root, "sql/merge.sql", "SELECT 1\n")
    return root


def test_a_link_to_a_file_outside_the_project_is_refused_by_name(
    project: Path, tmp_path: Path
) -> None:
    secret = write(tmp_path, "elsewhere/passwd", "root:x:0:0\n")
    (project / "handlers" / "passwd.py").symlink_to(secret)
    selection = Project.at(project).selection()
    assert "handlers/passwd.py" not in selection.files
    (problem,) = selection.refused
    assert problem.startswith(f"handlers/passwd.py: a link to {secret}, outside the project")


def test_a_link_to_a_directory_outside_is_refused_and_one_inside_is_not_followed(
    project: Path, tmp_path: Path
) -> None:
    write(tmp_path, "elsewhere/lib/mod.py")
    (project / "handlers" / "lib").symlink_to(tmp_path / "elsewhere" / "lib")
    (project / "pipelines" / "again").symlink_to(project / "sql")
    selection = Project.at(project).selection()
    assert [p.split(":")[0] for p in selection.refused] == ["handlers/lib"]
    assert selection.left_out["pipelines/again/"].startswith("a link to a directory")
    assert not [n for n in selection.files if n.startswith(("handlers/lib", "pipelines/again"))]


def test_a_project_folder_that_is_a_link_out_is_refused(project: Path, tmp_path: Path) -> None:
    write(tmp_path, "shared_sql/a.sql")
    for path in (project / "sql").iterdir():
        path.unlink()
    (project / "sql").rmdir()
    (project / "sql").symlink_to(tmp_path / "shared_sql")
    (problem,) = Project.at(project).selection().refused
    assert problem.startswith("sql: a link to")


def test_a_link_inside_the_project_is_packed_as_its_file(project: Path) -> None:
    (project / "pipelines" / "copy.yaml").symlink_to(project / "pipelines" / "etl.yaml")
    files = Project.at(project).files()
    assert files["pipelines/copy.yaml"] == project / "pipelines" / "etl.yaml"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("handlers/.secrets.yaml", "a hidden file"),
        ("handlers/.env", "looks like a credential (.env*)"),
        ("pipelines/.env.production", "looks like a credential (.env*)"),
        ("sql/server.pem", "looks like a credential (*.pem)"),
        ("handlers/tls.KEY", "looks like a credential (*.key)"),
        ("handlers/cert.p12", "looks like a credential (*.p12)"),
        ("handlers/notes.txt", "not one of .json, .py, .sql, .yaml, .yml"),
    ],
)
def test_hidden_and_credential_files_are_left_out_with_the_reason(
    project: Path, name: str, reason: str
) -> None:
    write(project, name, "x")
    selection = Project.at(project).selection()
    assert name not in selection.files
    assert selection.left_out[name].startswith(reason)
    assert selection.refused == []


def test_a_hidden_directory_is_left_out_whole(project: Path) -> None:
    write(project, "handlers/.hidden/step.py")
    write(project, "handlers/tests/test_x.py")
    selection = Project.at(project).selection()
    assert selection.left_out["handlers/.hidden/"] == "a hidden directory"
    assert selection.left_out["handlers/tests/"].startswith("the project's tests")
    assert Project.at(project).modules() == ["handlers", "handlers.export"]


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (SERVICE_ACCOUNT, "a Google service-account key"),
        ({"type": "authorized_user", "refresh_token": "1//x"}, "a Google user credential"),
    ],
)
def test_a_credential_json_is_recognised_by_content(
    project: Path, document: dict[str, str], reason: str
) -> None:
    write(project, "handlers/key.json", json.dumps(document))
    write(project, "pipelines/sa-key.json", json.dumps(document))
    write(project, "pipelines/config.json", json.dumps({"type": "service_account"}))
    selection = Project.at(project).selection()
    assert selection.left_out["handlers/key.json"].startswith(reason)
    assert selection.left_out["pipelines/sa-key.json"].startswith(reason)
    assert "pipelines/config.json" in selection.files  # no key in it


def test_a_large_json_is_scanned_in_chunks(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(contents, "JSON_PARSE_LIMIT", 10)
    monkeypatch.setattr(contents, "CHUNK", 8)  # the key spans two chunks
    write(project, "handlers/big.json", '{"padding": "xxxxxxx", "private_key": "k"}')
    write(project, "handlers/data.json", '{"padding": "xxxxxxxxxxxxxxxxxxxxxxxxx"}')
    selection = Project.at(project).selection()
    assert selection.left_out["handlers/big.json"] == 'holds "private_key": looks like a credential'
    assert "handlers/data.json" in selection.files


@pytest.mark.parametrize("name", ["handlers/my-step.py", "pipelines/2fa.py", "handlers/class.py"])
def test_a_module_name_python_cannot_import_is_refused_by_name(project: Path, name: str) -> None:
    write(project, name)
    selection = Project.at(project).selection()
    (problem,) = selection.refused
    assert problem.startswith(f"{name}: ")
    assert "cannot be part of a module name" in problem
    assert all(m.isidentifier() for n in Project.at(project).modules() for m in n.split("."))


def test_sql_files_are_not_modules(project: Path) -> None:
    write(project, "sql/odd-name.py")
    assert Project.at(project).selection().refused == []
    assert "sql/odd-name.py" in Project.at(project).files()


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "acme-lib @ file:///home/me/acme_lib-1.0-py3-none-any.whl",
            (
                "requirements.txt:1: acme-lib points at "
                "file:///home/me/acme_lib-1.0-py3-none-any.whl, which the function's build "
                "(Cloud Build) cannot fetch; use a URL starting with https:// or git+https://"
            ),
        ),
        (
            "requests==",
            "requirements.txt:1: 'requests==' is not a requirement (Expected ",
        ),
        ("./vendor/lib", "requirements.txt:1: './vendor/lib' is not a requirement ("),
    ],
)
def test_requirements_are_refused_with_a_readable_reason(line: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        merge_requirements([], [f"requirements.txt:1:{line}"])
    message = str(caught.value)
    assert message.startswith(expected)
    assert "\n" not in message


def test_a_url_requirement_is_kept_whole() -> None:
    url = "acme-lib @ https://example.com/acme_lib-1.0-py3-none-any.whl"
    assert merge_requirements([], [f"requirements.txt:3:{url}"]) == [
        "acme-lib @ https://example.com/acme_lib-1.0-py3-none-any.whl"
    ]
