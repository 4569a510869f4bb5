"""terraform/ checked offline: every file parses (python-hcl2), and the wiring matches dagrelay —
setting names, the router's delivery and dead-letter policy (the local stack's values), nothing
public, Cloud SQL private only, least-privilege roles per service account, the function source.
What Google's APIs would say about it needs a real `terraform plan` (README.md in terraform/)."""

from __future__ import annotations

import ast
import inspect
import json
import re
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest

from dagrelay import cli, messages
from dagrelay.config import Settings
from dagrelay.ingest.sources import INBOX_PREFIX, load_sources
from dagrelay.local import infra
from dagrelay.ops.packaging import build_archive
from tests.unit.terraform_helpers import (
    REPO,
    RESOURCE_REF,
    TERRAFORM,
    Config,
    block,
    load_config,
    parse_file,
    string_list,
    walk,
)

# One file per concern: the resource types (by prefix) each file may declare. A resource in the
# wrong file, or a new file nobody assigned a concern, fails the layout test.
CONCERNS: dict[str, tuple[str, ...]] = {
    "main.tf": ("google_project_service",),
    "network.tf": ("google_compute_", "google_service_networking_", "google_vpc_access_"),
    "database.tf": ("google_sql_", "google_secret_manager_secret", "random_"),
    "pubsub.tf": ("google_pubsub_topic", "google_pubsub_subscription"),
    "functions.tf": (
        "google_cloudfunctions2_",
        "google_storage_bucket",  # the function source bucket and its archive object
    ),
    "deploy.tf": ("google_cloudfunctions2_", "terraform_data"),  # the deploy function and step
    "iam.tf": ("google_service_account", "_iam_member", "google_project_iam_custom_role"),
    "scheduler.tf": ("google_cloud_scheduler_",),
    "storage.tf": ("google_storage_bucket", "google_storage_notification"),
    "bigquery.tf": ("google_bigquery_dataset",),
    "monitoring.tf": ("google_logging_metric", "google_monitoring_"),
    "metrics.tf": ("google_logging_metric", "google_monitoring_"),  # the sweep's metrics
}
# Blocks other than resources live in one file each.
SINGLE_HOME = {
    "variable": "variables.tf",
    "output": "outputs.tf",
    "terraform": "versions.tf",
    "provider": "versions.tf",
}
SETTING_NAMES = {f"DAGRELAY_{name.upper()}" for name in Settings.model_fields}
PUBLIC = ("allUsers", "allAuthenticatedUsers")

# Who may do what: (role, where). "project" is a project-level grant; anything else names the one
# resource (or for_each family of resources) the grant is on.
EXPECTED_ROLES: dict[str, set[tuple[str, str]]] = {
    "router": {
        ("roles/pubsub.publisher", "google_pubsub_topic.events"),
        ("roles/pubsub.publisher", "google_pubsub_topic.alerts"),
        ("roles/cloudsql.client", "project"),
        ("roles/bigquery.jobUser", "project"),
        ("roles/bigquery.dataEditor", "google_bigquery_dataset.datasets"),
        ("roles/storage.objectAdmin", "google_storage_bucket.data"),
        ("roles/secretmanager.secretAccessor", "google_secret_manager_secret.db_password"),
        # the cloudrun.job handler: a custom role on each of the team's listed jobs only
        ("google_project_iam_custom_role.run_jobs", "var.cloud_run_jobs"),
        ("roles/cloudtrace.agent", "project"),  # only with var.enable_tracing
    },
    "status": {
        ("roles/cloudsql.client", "project"),
        ("roles/secretmanager.secretAccessor", "google_secret_manager_secret.db_password"),
    },
    "operate": {
        ("roles/cloudsql.client", "project"),
        ("roles/secretmanager.secretAccessor", "google_secret_manager_secret.db_password"),
        ("roles/pubsub.publisher", "google_pubsub_topic.events"),
    },
    "deploy": {
        ("roles/cloudsql.client", "project"),
        ("roles/secretmanager.secretAccessor", "google_secret_manager_secret.db_password"),
    },
    "push_invoker": {("roles/run.invoker", "google_cloudfunctions2_function.router")},
    "builder": {
        ("roles/logging.logWriter", "project"),
        ("roles/artifactregistry.writer", "project"),
        ("roles/storage.objectViewer", "google_storage_bucket.function_source"),
    },
    "pubsub service agent": {
        ("roles/pubsub.publisher", "google_pubsub_topic.dead_letter"),
        ("roles/pubsub.subscriber", "google_pubsub_subscription.router"),
        ("roles/iam.serviceAccountTokenCreator", "google_service_account.push_invoker"),
    },
    "gcs service agent": {("roles/pubsub.publisher", "google_pubsub_topic.events")},
    "var.status_invokers": {("roles/run.invoker", "google_cloudfunctions2_function.status")},
    "var.operate_invokers": {("roles/run.invoker", "google_cloudfunctions2_function.operate")},
}
FUNCTIONS = ("router", "status", "operate")
IAM_TARGETS = ("topic", "dataset_id", "bucket", "secret_id", "service", "subscription", "name")


@pytest.fixture(scope="module")
def tf() -> Config:
    return load_config()


def test_one_file_per_concern_and_all_parse() -> None:
    misplaced = []
    for path in TERRAFORM.glob("*.tf"):
        parsed = parse_file(path)
        assert parsed, f"{path} parsed to nothing"
        for kind, home in SINGLE_HOME.items():
            if parsed.get(kind) and path.name != home:
                misplaced.append(f"{path.name}: a {kind} block belongs in {home}")
        allowed = CONCERNS.get(path.name, ())
        for resources in parsed.get("resource", []):
            misplaced += [f"{path.name}: {r}" for r in resources if not _in_concern(r, allowed)]
    assert misplaced == []
    for path in TERRAFORM.glob("examples/*.tfvars"):
        assert parse_file(path), f"{path} parsed to nothing"


def _in_concern(rtype: str, prefixes: tuple[str, ...]) -> bool:
    return any(rtype.startswith(p) or (p.startswith("_") and p in rtype) for p in prefixes)


def test_providers_are_pinned(tf: Config) -> None:
    (terraform,) = tf.terraform
    providers = block(terraform, "required_providers")
    assert providers["google"]["version"].startswith("~> 6.")
    assert providers["random"]["version"].startswith("~> 3.")
    assert "google-beta" not in providers


def test_every_dagrelay_variable_in_terraform_is_a_setting() -> None:
    named = set()
    for path in TERRAFORM.rglob("*"):
        if path.suffix in {".tf", ".tfvars", ".sh"}:
            named |= set(re.findall(r"\bDAGRELAY_[A-Z_]+\b", path.read_text(encoding="utf-8")))
    # DAGRELAY itself (the command, in migrate.sh) is not a setting; every DAGRELAY_X is.
    assert named, "no DAGRELAY_* settings found"
    assert named <= SETTING_NAMES, f"not dagrelay settings: {sorted(named - SETTING_NAMES)}"


@pytest.mark.parametrize("function", FUNCTIONS)
def test_function_environment_is_dagrelay_configuration(tf: Config, function: str) -> None:
    service = block(tf.resource("google_cloudfunctions2_function", function), "service_config")
    env = tf.resolve(service["environment_variables"])
    secrets = {s["key"]: s for s in service["secret_environment_variables"]}
    # THREADS: functions-framework's request threads (the router's request concurrency).
    assert set(env) - {"THREADS"} | set(secrets) <= SETTING_NAMES
    needed = {
        "DAGRELAY_PROJECT_ID",
        "DAGRELAY_EVENTS_TOPIC",
        "DAGRELAY_ALERTS_TOPIC",
        "DAGRELAY_DEAD_LETTER_TOPIC",
        "DAGRELAY_CLOUD_SQL_INSTANCE",
        "DAGRELAY_DB_NAME",
        "DAGRELAY_DB_USER",
    }
    assert needed <= set(env)
    assert "DAGRELAY_DATABASE_URL" not in env  # the connector path, not a URL
    assert env["DAGRELAY_DB_IP_TYPE"] == "${local.db_ip_type}"
    assert env["DAGRELAY_EVENTS_TOPIC"] == "${google_pubsub_topic.events.name}"
    assert env["DAGRELAY_DEAD_LETTER_TOPIC"] == "${google_pubsub_topic.dead_letter.name}"
    # The password is a Secret Manager reference, never a plain variable.
    assert "DAGRELAY_DB_PASSWORD" not in env
    secret_ref = "${google_secret_manager_secret.db_password.secret_id}"  # noqa: S105 - a reference
    assert secrets["DAGRELAY_DB_PASSWORD"]["secret"] == secret_ref
    assert service["vpc_connector"] == "${local.vpc_connector}"
    ingress = tf.resolve(service["ingress_settings"])
    assert ingress == ("ALLOW_INTERNAL_ONLY" if function == "router" else "ALLOW_ALL")


def _sample(tf: Config, expression: str) -> str:
    """A value of the shape Terraform would give: literals as written, functions of variables
    evaluated on the variable's default, resource attributes as placeholders."""
    if match := re.fullmatch(r"\$\{(tostring|jsonencode)\(var\.(\w+)\)\}", expression):
        function, name = match.groups()
        default = tf.variables[name]["default"]
        return str(default) if function == "tostring" else json.dumps(default)
    if re.fullmatch(r"\$\{tostring\(local\.\w+\)\}", expression):
        return "25"  # a number Terraform computes (the capacity model's)
    if match := re.fullmatch(r"\$\{join\(\",\", var\.(\w+)\)\}", expression):
        return ",".join(tf.variables[match.group(1)]["default"])
    if match := re.fullmatch(r'\$\{var\.(\w+) \? "([^"]*)" : "([^"]*)"\}', expression):
        name, yes, no = match.groups()
        return yes if tf.variables[name]["default"] else no
    if match := re.fullmatch(r"\$\{var\.(\w+)\}", expression):
        return str(tf.variables[match.group(1)].get("default") or "my-project")
    return "placeholder" if expression.startswith("${") else expression


def test_function_environment_loads_as_settings(
    tf: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = block(tf.resource("google_cloudfunctions2_function", "router"), "service_config")
    for name in ("DATABASE_URL", "DAGRELAY_DATABASE_URL", "DAGRELAY_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    for key, value in tf.resolve(service["environment_variables"]).items():
        local = value.startswith("${local.")  # a local's expression, evaluated as one
        monkeypatch.setenv(key, _sample(tf, tf.resolve(value) if local else value))
    monkeypatch.setenv("DAGRELAY_DB_PASSWORD", "from-secret-manager")
    settings = Settings()
    assert settings.database_url is None
    assert settings.cloud_sql_instance == "placeholder"
    # The small profile's path: the connector on the public IP (only connectors admitted).
    assert settings.db_ip_type == "public"
    assert settings.db_pool_size == tf.variables["db_pool_size"]["default"]
    assert settings.db_max_overflow == tf.variables["db_max_overflow"]["default"]
    assert settings.request_concurrency == tf.variables["router_concurrency"]["default"]
    assert settings.router_max_instances == tf.variables["router_max_instances"]["default"]
    assert settings.db_pool_timeout_s == tf.variables["db_pool_timeout_s"]["default"]
    assert settings.handler_modules == []
    assert settings.db_password is not None
    assert settings.tracing == "off"  # enable_tracing's default
    assert settings.tracing_sample_ratio == tf.variables["trace_sample_ratio"]["default"]


def _push_subscription(tf: Config, topic: str) -> dict[str, Any]:
    found = [
        body
        for body in tf.resources["google_pubsub_subscription"].values()
        if body["topic"] == f"${{google_pubsub_topic.{topic}.id}}" and "push_config" in body
    ]
    assert len(found) == 1, f"expected one push subscription on {topic}, found {len(found)}"
    return found[0]


@pytest.mark.parametrize("topic", ["events", "dead_letter"])
def test_topics_are_pushed_to_the_router(tf: Config, topic: str) -> None:
    sub = _push_subscription(tf, topic)
    push = block(sub, "push_config")
    assert tf.resolve("${local.router_uri}") == (
        "${google_cloudfunctions2_function.router.service_config[0].uri}"
    )
    # functions-framework derives the CloudEvent source from /projects/<p>/topics/<t>; the router
    # recognises dead letters by that source.
    assert push["push_endpoint"] == (
        f"${{local.router_uri}}/projects/${{var.project_id}}/topics/"
        f"${{google_pubsub_topic.{topic}.name}}"
    )
    token = block(push, "oidc_token")
    assert token["service_account_email"] == "${google_service_account.push_invoker.email}"
    assert block(sub, "expiration_policy")["ttl"] == ""
    assert "event_trigger" not in tf.resource("google_cloudfunctions2_function", "router")


@pytest.mark.parametrize(
    ("topic", "local"), [("events", infra.EVENTS), ("dead_letter", infra.DEAD_LETTERS)]
)
def test_subscriptions_deliver_like_the_local_stack(
    tf: Config, topic: str, local: infra.Delivery
) -> None:
    sub = _push_subscription(tf, topic)
    retry = block(sub, "retry_policy")
    policy = sub.get("dead_letter_policy")
    found = infra.Delivery(
        ack_deadline_s=tf.resolve(sub["ack_deadline_seconds"]),
        retry_min_backoff_s=_seconds(tf.resolve(retry["minimum_backoff"])),
        retry_max_backoff_s=_seconds(tf.resolve(retry["maximum_backoff"])),
        retention_s=_seconds(tf.resolve(sub["message_retention_duration"])),
        max_delivery_attempts=(
            None
            if policy is None
            else tf.resolve(block(sub, "dead_letter_policy")["max_delivery_attempts"])
        ),
    )
    assert found == local
    if policy is not None:
        assert block(sub, "dead_letter_policy")["dead_letter_topic"] == (
            "${google_pubsub_topic.dead_letter.id}"
        )
    # Every delivery ends: a dead letter is not dead-lettered again, and is kept at most a day.
    assert infra.DEAD_LETTERS.max_delivery_attempts is None
    assert infra.DEAD_LETTERS.retention_s <= 86_400


def _seconds(duration: str) -> int:
    assert duration.endswith("s"), duration
    return int(duration.removesuffix("s"))


def test_nothing_is_public(tf: Config) -> None:
    for rtype, name, body in tf.iter_resources():
        for value in walk(body):
            assert not any(p in str(value) for p in PUBLIC), f"{rtype}.{name} is public"
    for rtype in tf.resources:
        assert not rtype.endswith(("_iam_binding", "_iam_policy")), f"authoritative IAM: {rtype}"
    for variable in ("status_invokers", "operate_invokers"):
        pattern = _validation_regex(tf, variable)
        assert re.fullmatch(pattern, "group:oncall@example.com")
        for principal in PUBLIC:
            assert not re.fullmatch(pattern, principal)
    for bucket in ("data", "function_source"):
        body = tf.resource("google_storage_bucket", bucket)
        assert body["public_access_prevention"] == "enforced"
        assert body["uniform_bucket_level_access"] is True


def test_cloud_sql_is_private_backed_up_and_protected(tf: Config) -> None:
    instance = tf.resource("google_sql_database_instance", "main")
    assert instance["database_version"] == "POSTGRES_15"
    settings = block(instance, "settings")
    ip = block(settings, "ip_configuration")
    # Default: a public IP with no authorized networks that admits only the Cloud SQL connectors
    # (IAM + TLS); private_network = true: a private IP only.
    assert tf.variables["private_network"]["default"] is False
    assert settings["connector_enforcement"] == "REQUIRED"
    assert "authorized_networks" not in ip
    assert ip["ipv4_enabled"] == "${!var.private_network}"
    assert ip["private_network"] == (
        "${var.private_network ? google_compute_network.vpc[0].id : null}"
    )
    assert ip["ssl_mode"] == "ENCRYPTED_ONLY"
    backups = block(settings, "backup_configuration")
    assert backups["enabled"] is True
    assert backups["point_in_time_recovery_enabled"] is True
    assert instance["deletion_protection"] == "${var.deletion_protection}"
    assert settings["deletion_protection_enabled"] == "${var.deletion_protection}"
    assert tf.variables["deletion_protection"]["default"] is True
    assert "${google_service_networking_connection.private_services}" in instance["depends_on"]
    user = tf.resource("google_sql_user", "dagrelay")
    version = tf.resource("google_secret_manager_secret_version", "db_password")
    generated = "${random_password.db.result}"
    assert user["password"] == version["secret_data"] == generated


def _principal(body: dict[str, Any]) -> str:
    member = body["member"]
    if match := re.search(r"google_service_account\.([a-z0-9_]+)\.email", member):
        return match.group(1)
    if member == "${local.pubsub_agent}":
        return "pubsub service agent"
    if "google_storage_project_service_account" in member:
        return "gcs service agent"
    if member == "${each.value}":
        targets: str = body["for_each"]
        return targets.removeprefix("${toset(").removesuffix(")}")
    raise AssertionError(f"unexpected IAM member {member!r}")


def _targets(rtype: str, body: dict[str, Any]) -> list[str]:
    if rtype == "google_project_iam_member":
        return ["project"]
    if rtype == "google_service_account_iam_member":
        expression = body["service_account_id"]
    else:
        expression = next(body[key] for key in IAM_TARGETS if key in body)
    if "each.value" in expression:
        for_each = body["for_each"]
        expressions = list(for_each.values()) if isinstance(for_each, dict) else [for_each]
    else:
        expressions = [expression]
    targets = []
    for item in expressions:
        if variable := re.search(r"\bvar\.[a-z0-9_]+", item):
            targets.append(variable.group(0))  # resources the team owns, named by a variable
            continue
        match = RESOURCE_REF.search(item)
        assert match, f"no resource reference in {item!r}"
        targets.append(f"{match.group(1)}.{match.group(2)}")
    return targets


def _roles(body: dict[str, Any]) -> list[str]:
    if body["role"] == "${each.value}":
        return string_list(body["for_each"])
    if match := RESOURCE_REF.search(body["role"]):
        return [f"{match.group(1)}.{match.group(2)}"]  # a custom role
    return [body["role"]]


def test_each_principal_has_exactly_its_roles(tf: Config) -> None:
    granted: dict[str, set[tuple[str, str]]] = {}
    for rtype, _, body in tf.iter_resources():
        if not rtype.endswith("_iam_member"):
            continue
        principal = _principal(body)
        for role in _roles(body):
            for target in _targets(rtype, body):
                granted.setdefault(principal, set()).add((role, target))
    assert granted == EXPECTED_ROLES
    accounts = set(tf.resources["google_service_account"])
    assert accounts == {"router", "status", "operate", "deploy", "push_invoker", "builder"}
    for function in (*FUNCTIONS, "deploy"):
        service = block(tf.resource("google_cloudfunctions2_function", function), "service_config")
        assert service["service_account_email"] == (f"${{google_service_account.{function}.email}}")


def test_function_source_is_the_built_archive(tf: Config, tmp_path: Path) -> None:
    default = tf.variables["function_source_archive"]["default"]
    assert default == "../dist/function-source.zip"
    cli_default = inspect.signature(cli.define.build_function).parameters["out"].default
    assert (TERRAFORM / default).resolve() == (REPO / cli_default).resolve()
    source = tf.resource("google_storage_bucket_object", "function_source")
    assert source["source"] == "${var.function_source_archive}"
    assert "${filemd5(var.function_source_archive)}" in source["name"]
    entry_points = _module_functions(REPO / "functions" / "main.py")
    for function in FUNCTIONS:
        build = block(tf.resource("google_cloudfunctions2_function", function), "build_config")
        assert build["runtime"] == "python311"
        assert build["entry_point"] in entry_points
        storage = block(block(build, "source"), "storage_source")
        assert storage["object"] == "${google_storage_bucket_object.function_source.name}"

    archive = build_archive(tmp_path / "function-source.zip")
    with zipfile.ZipFile(archive) as zf:
        names = set(zf.namelist())
        requirements = zf.read("requirements.txt").decode().split()
    assert {"main.py", "requirements.txt", "dagrelay/__init__.py"} <= names
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    runtime = pyproject["project"]["dependencies"]
    assert sorted(requirements) == sorted(runtime)
    assert all("==" in r for r in requirements)


def _module_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}


def test_scheduler_publishes_valid_messages_to_the_events_topic(tf: Config) -> None:
    jobs = tf.resources["google_cloud_scheduler_job"]
    sweep = block(jobs["sweep"], "pubsub_target")
    assert sweep["topic_name"] == "${google_pubsub_topic.events.id}"
    assert sweep["attributes"] == {"action": "sweep"}
    assert sweep["data"] == '${base64encode(jsonencode({action = "sweep"}))}'
    messages.validator("sweep").validate({"action": "sweep"})
    assert tf.variables["sweep_schedule"]["default"] == "* * * * *"

    # Pipeline schedules live in the database and the sweep starts their ticks: no job per
    # pipeline, and nothing in the variables to declare one.
    assert set(jobs) == {"sweep"}
    assert "scheduled_pipelines" not in tf.variables
    assert "scheduled_pipelines" not in parse_file(TERRAFORM / "examples" / "dev.tfvars")


def test_inbox_notifies_the_events_topic(tf: Config) -> None:
    notification = tf.resource("google_storage_notification", "inbox")
    assert notification["topic"] == "${google_pubsub_topic.events.id}"
    assert notification["event_types"] == ["OBJECT_FINALIZE"]
    assert notification["bucket"] == '${google_storage_bucket.data["inbox"].name}'
    # Only new files under ingestion's inbox prefix, not its own staging/archive/rejected writes.
    assert notification["object_name_prefix"] == INBOX_PREFIX
    assert set(tf.resolve("${local.buckets}")) == {"inbox"}


def test_datasets_hold_every_table_the_sources_and_the_example_write(tf: Config) -> None:
    datasets = set(tf.variables["bigquery_datasets"]["default"])
    targets = {source.target_table.split(".")[0] for source in load_sources().values()}
    assert targets | {"reports"} <= datasets


def test_task_failure_alert_matches_the_router_log_line(tf: Config) -> None:
    engine = (REPO / "functions" / "dagrelay" / "engine" / "core.py").read_text(encoding="utf-8")
    assert '"alert": "task_failed"' in engine
    metric = tf.resource("google_logging_metric", "task_failures")
    assert metric["filter"] == '${local.router_logs} AND jsonPayload.alert="task_failed"'
    router_logs = tf.locals["router_logs"]
    assert '"severity>=ERROR"' in router_logs
    assert "${local.router_function}" in router_logs
    assert tf.locals["router_function"] == "${local.prefix}-router"
    policy = tf.resource("google_monitoring_alert_policy", "task_failures")
    assert policy["notification_channels"] == "${var.notification_channels}"
    condition = block(block(policy, "conditions"), "condition_threshold")
    assert "${google_logging_metric.task_failures.name}" in condition["filter"]


def _validation_regex(tf: Config, variable: str) -> str:
    (validation,) = tf.variables[variable]["validation"]
    match = re.search(r'regex\("(.+?)", ', validation["condition"])
    assert match, validation["condition"]
    return match.group(1).replace("\\\\", "\\")


@pytest.mark.parametrize(
    ("variable", "good", "bad"),
    [
        ("project_id", "my-project-123", "My_Project"),
        ("region", "europe-west1", "europe-west1-b"),
        ("name_prefix", "dagrelay", "Dag-Relay-"),
    ],
)
def test_key_variables_are_validated(tf: Config, variable: str, good: str, bad: str) -> None:
    pattern = _validation_regex(tf, variable)
    assert re.fullmatch(pattern, good)
    assert not re.fullmatch(pattern, bad)


def test_variables_and_outputs_are_typed_and_described(tf: Config) -> None:
    for name, variable in tf.variables.items():
        assert variable.get("description"), f"variable {name} has no description"
        assert variable.get("type"), f"variable {name} has no type"
    for name, output in tf.outputs.items():
        assert output.get("description"), f"output {name} has no description"
    required = {n for n, v in tf.variables.items() if "default" not in v}
    assert required == {"project_id", "region"}


def test_example_tfvars_hold_no_secrets() -> None:
    for path in TERRAFORM.glob("examples/*.tfvars"):
        values = parse_file(path)
        assert "project_id" in values
        assert not any(re.search("password|secret|token", key, re.I) for key in values), path


def test_viewers_and_operators_are_separate_and_only_operators_publish(tf: Config) -> None:
    """The viewers' status function and the operators' function run the same code from the
    same archive with their own entry point, account and invoker list; of the two, only the
    operator function's account may publish to the events topic."""
    builds = {
        f: block(tf.resource("google_cloudfunctions2_function", f), "build_config")
        for f in ("status", "operate")
    }
    assert {f: b["entry_point"] for f, b in builds.items()} == {
        "status": "status",
        "operate": "operate",
    }
    assert builds["status"]["source"] == builds["operate"]["source"]
    invokers = {
        name: body["for_each"]
        for name, body in tf.resources["google_cloud_run_service_iam_member"].items()
        if name != "router_push_invoker"
    }
    assert invokers == {
        "status_invokers": "${toset(var.status_invokers)}",
        "operate_invokers": "${toset(var.operate_invokers)}",
    }
    publishers = {
        principal
        for principal, grants in EXPECTED_ROLES.items()
        if ("roles/pubsub.publisher", "google_pubsub_topic.events") in grants
    }
    assert publishers == {"router", "operate", "gcs service agent"}


def test_apply_runs_the_deploy_step_once_per_archive_before_the_functions(tf: Config) -> None:
    """The deploy function runs the same archive (entry point deploy, its own account) and knows
    its hash; terraform_data.deploy calls it once per archive hash through scripts/deploy.sh and
    the message-handling functions wait for it. No pipeline list and no migration flag remain."""
    deploy = tf.resource("google_cloudfunctions2_function", "deploy")
    build = block(deploy, "build_config")
    assert build["entry_point"] == "deploy"
    assert build["entry_point"] in _module_functions(REPO / "functions" / "main.py")
    router = block(tf.resource("google_cloudfunctions2_function", "router"), "build_config")
    assert build["source"] == router["source"]
    service = block(deploy, "service_config")
    assert service["environment_variables"] == (
        "${merge(local.function_env, {DAGRELAY_ARCHIVE_HASH = local.archive_hash})}"
    )
    assert service["min_instance_count"] == 0
    assert tf.locals["archive_hash"] == "${filemd5(var.function_source_archive)}"
    assert (
        tf.locals["archive_hash"]
        in tf.resource("google_storage_bucket_object", "function_source")["name"]
    )
    step = tf.resource("terraform_data", "deploy")
    assert step["triggers_replace"]["archive"] == "${local.archive_hash}"
    (provisioner,) = step["provisioner"]
    local_exec = provisioner["local-exec"]
    script = TERRAFORM / local_exec["command"].removeprefix("${path.module}/")
    assert script.is_file()
    assert script.stat().st_mode & 0o111, f"{script} is not executable"
    assert local_exec["environment"]["DEPLOY_ARCHIVE"] == "${local.archive_hash}"
    for function in FUNCTIONS:
        body = tf.resource("google_cloudfunctions2_function", function)
        assert "${terraform_data.deploy}" in body["depends_on"]
    for gone in ("pipeline_files", "run_migrations_on_apply", "dagrelay_command"):
        assert gone not in tf.variables
    assert set(tf.resources["terraform_data"]) == {"deploy"}


def test_the_default_path_has_no_always_on_network(tf: Config) -> None:
    """Every network resource exists only with private_network (default false): the small
    profile runs nothing at idle besides Cloud SQL."""
    network = parse_file(TERRAFORM / "network.tf")
    for resources in network["resource"]:
        for rtype, named in resources.items():
            for name, body in named.items():
                assert body["count"] == "${var.private_network ? 1 : 0}", f"{rtype}.{name}"
    assert tf.variables["db_tier"]["default"] == "db-f1-micro"
    assert tf.variables["db_availability_type"]["default"] == "ZONAL"
    assert tf.locals["vpc_connector"] == (
        "${var.private_network ? google_vpc_access_connector.functions[0].id : null}"
    )
    assert parse_file(TERRAFORM / "examples" / "prod.tfvars")["private_network"] is True
