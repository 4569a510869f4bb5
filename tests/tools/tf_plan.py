"""`terraform test` of the three Terraform roots, offline (`make terraform-check`).

    python -m tests.tools.tf_plan OUT_DIR DAGRELAY

Each root is planned twice with mock providers: with its defaults, and with the production
profile (terraform/examples/prod.tfvars as -var-file):

- the module, terraform/ (tests in terraform/tests/: the plan, and the validations' refusals);
- the repository's root, terraform/deploy/ (terraform/deploy/tests/);
- the root `dagrelay init` writes: a project written afresh into OUT_DIR/scaffold with the
  module as a local path, and tests/terraform/scaffold.tftest.hcl copied into it.

Providers: by default the schema-only servers of tests/tools/tf_schema_provider.py, one per
provider for the whole run, serving what tests/tools/tf_offline.py built into OUT_DIR; Terraform
reattaches to them (TF_REATTACH_PROVIDERS: no registry, no plugin process per run) and
`terraform get` installs the local modules. With DAGRELAY_TERRAFORM_REGISTRY=1, Terraform's own
CLI configuration and `terraform init` instead (a machine with a registry: the real providers'
schemas; init writes each root's .terraform.lock.hcl as usual).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PRODUCTION = REPO / "terraform" / "examples" / "prod.tfvars"
REGISTRY = os.environ.get("DAGRELAY_TERRAFORM_REGISTRY") == "1"


@dataclass(frozen=True)
class Root:
    name: str
    directory: Path
    extra_args: tuple[str, ...]  # for every run
    production_filter: tuple[str, ...]  # the test files that the production profile runs


@dataclass(frozen=True)
class Outcome:
    label: str
    ok: bool
    seconds: float
    output: str


def _scaffold(out: Path, dagrelay: str) -> Path:
    """A project as `dagrelay init` writes it, its module a local path to this checkout's."""
    project = out / "scaffold"
    shutil.rmtree(project, ignore_errors=True)
    project.mkdir(parents=True)
    module = os.path.relpath(REPO / "terraform", project / "terraform")
    subprocess.run(
        [dagrelay, "init", str(project), "--terraform-module", module, "--force"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    (project / "dist").mkdir()
    shutil.copy(out / "function-source.zip", project / "dist" / "function-source.zip")
    (project / "terraform" / "tests").mkdir()
    shutil.copy(
        REPO / "tests" / "terraform" / "scaffold.tftest.hcl",
        project / "terraform" / "tests" / "plan.tftest.hcl",
    )
    return project / "terraform"


def _placeholder_archive(out: Path) -> Path:
    """Stands in for `dagrelay build-function`'s archive: the plans only hash it."""
    archive = out / "function-source.zip"
    if not archive.exists():
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("main.py", "# a placeholder for offline plans\n")
    return archive


def _roots(out: Path, dagrelay: str) -> list[Root]:
    archive = f"-var=function_source_archive={_placeholder_archive(out).resolve()}"
    return [
        Root("module", REPO / "terraform", (archive,), ("-filter=tests/plan.tftest.hcl",)),
        Root("deploy", REPO / "terraform" / "deploy", (archive,), ()),
        Root("scaffold", _scaffold(out, dagrelay), (), ()),
    ]


def _start_servers(out: Path) -> tuple[list[subprocess.Popen[str]], str]:
    """A shared schema server per provider, and the TF_REATTACH_PROVIDERS that points at them."""
    server = REPO / "tests" / "tools" / "tf_schema_provider.py"
    servers: list[subprocess.Popen[str]] = []
    reattach = {}
    schemas = sorted((out / "plugins").glob("*/SCHEMA.pb"))
    if not schemas:
        raise RuntimeError(f"no provider schemas in {out}/plugins: run `make terraform-plugins`")
    for schema in schemas:
        process = subprocess.Popen(
            [sys.executable, str(server), "--shared", str(schema)],
            stdout=subprocess.PIPE,
            text=True,
        )
        servers.append(process)
        assert process.stdout is not None
        address = process.stdout.readline().strip()
        if not address:
            raise RuntimeError(f"the schema server of {schema} did not start")
        reattach[f"registry.terraform.io/hashicorp/{schema.parent.name}"] = {
            "Protocol": "grpc",
            "ProtocolVersion": 6,
            "Pid": process.pid,
            "Test": True,  # Terraform leaves the server running
            "Addr": {"Network": "tcp", "String": address},
        }
    return servers, json.dumps(reattach)


def _env(out: Path, root: Root, reattach: str) -> dict[str, str]:
    env = dict(os.environ, TF_DATA_DIR=str(out / "data" / root.name), TF_IN_AUTOMATION="1")
    if not REGISTRY:
        env["TF_CLI_CONFIG_FILE"] = str(out / "terraformrc")
        env["TF_REATTACH_PROVIDERS"] = reattach
    return env


def _run(label: str, args: list[str], env: dict[str, str]) -> Outcome:
    start = time.monotonic()
    done = subprocess.run(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False
    )
    return Outcome(label, done.returncode == 0, time.monotonic() - start, done.stdout)


def _prepare(root: Root, env: dict[str, str]) -> Outcome:
    chdir = f"-chdir={root.directory}"
    if REGISTRY:
        args = ["terraform", chdir, "init", "-backend=false", "-input=false", "-no-color"]
    else:
        args = ["terraform", chdir, "get", "-no-color"]
    return _run(f"{root.name}: {args[2]}", args, env)


def _tests(root: Root, env: dict[str, str]) -> list[Outcome]:
    base = ["terraform", f"-chdir={root.directory}", "test", "-no-color", *root.extra_args]
    return [
        _run(f"{root.name}: defaults", base, env),
        _run(
            f"{root.name}: production profile",
            [*base, *root.production_filter, f"-var-file={PRODUCTION}"],
            env,
        ),
    ]


def _root(root: Root, env: dict[str, str]) -> list[Outcome]:
    prepared = _prepare(root, env)
    return [prepared] if not prepared.ok else [prepared, *_tests(root, env)]


def _all(out: Path, roots: list[Root]) -> list[Outcome]:
    servers, reattach = ([], "") if REGISTRY else _start_servers(out)
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            results = pool.map(lambda r: _root(r, _env(out, r, reattach)), roots)
            return [outcome for result in results for outcome in result]
    finally:
        for server in servers:
            server.terminate()
            server.wait()


def main(out: Path, dagrelay: str) -> int:
    start = time.monotonic()
    outcomes = _all(out, _roots(out, dagrelay))
    failed = [o for o in outcomes if not o.ok]
    for outcome in outcomes:
        status = "ok" if outcome.ok else "FAILED"
        sys.stdout.write(f"terraform {outcome.label}: {status} ({outcome.seconds:.1f} s)\n")
    for outcome in failed:
        sys.stdout.write(f"\n--- terraform {outcome.label} ---\n{outcome.output}\n")
    tests = [o for o in outcomes if not o.label.endswith((": get", ": init"))]
    passed = sum(o.ok for o in tests)
    providers = "registry" if REGISTRY else "offline"
    sys.stdout.write(
        f"terraform test ({providers} providers, {time.monotonic() - start:.1f} s): "
        f"{passed} passed, {len(failed)} failed\n"  # a root that could not be prepared counts
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]).resolve(), os.path.abspath(sys.argv[2])))
