"""The local stack: PostgreSQL (the running server), the Pub/Sub emulator, the router and the
dashboard's functions (status, operate) under functions-framework, and a push subscription from
the events topic to the router — the same shape as in GCP. Everything it starts, it stops (by
PID)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from dagrelay.local import bigquery, cloudrun, gcs, infra, processes
from dagrelay.local.processes import ManagedProcess, StackError
from dagrelay.local.sweep import SweepLoop
from dagrelay.ops.project import Project

# What start() sets in this process's environment for its own clients; stop() restores it.
OWN_ENV = (
    "PUBSUB_EMULATOR_HOST",
    "STORAGE_EMULATOR_HOST",
    "DAGRELAY_BIGQUERY_ENDPOINT",
    "DAGRELAY_BIGQUERY_PROJECT",
    "DAGRELAY_CLOUD_RUN_ENDPOINT",
)
# The datasets of the example sources and pipeline (terraform/ creates the same).
DATASETS = ("finance", "reports", "web")
DEFAULT_DATABASE_URL = "postgresql+pg8000://postgres@127.0.0.1:5432/dagrelay"
# Logs and the state file of `up` (one stack per user, wherever it was started from):
# DAGRELAY_LOCAL_STACK_DIR moves them (tests do).
STATE_DIR = Path(
    os.environ.get("DAGRELAY_LOCAL_STACK_DIR")
    or Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    / "dagrelay"
    / "local-stack"
)
# The Cloud Functions of functions/main.py the stack can serve, each a functions-framework server
# of its own (two processes): the router (the push subscriptions' endpoint), and the dashboard's
# read-only and operator functions.
FUNCTIONS = ("router", "status", "operate")
DASHBOARDS = ("status", "operate")
# A JSON file of local Cloud Run jobs ({"name": {"command": [...], "args": [...], "env": {}}}):
# with it, `up` and `demo` start the local Cloud Run (dagrelay/local/cloudrun.py).
RUN_JOBS_ENV = "DAGRELAY_LOCAL_RUN_JOBS"


def _run_jobs_from_env() -> dict[str, dict[str, Any]]:
    path = os.environ.get(RUN_JOBS_ENV)
    if not path:
        return {}
    jobs: dict[str, dict[str, Any]] = json.loads(Path(path).read_text(encoding="utf-8"))
    return jobs


@dataclass
class StackConfig:
    database_url: str = field(
        default_factory=lambda: os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)
    )
    project_id: str = field(
        default_factory=lambda: os.environ.get("DAGRELAY_PROJECT_ID", "dagrelay-local")
    )
    events_topic: str = "dagrelay-events"
    subscription: str = "dagrelay-events-router"
    alerts_topic: str = "dagrelay-alerts"
    dead_letter_topic: str = "dagrelay-dead-letter"
    sweep_interval_s: float = 5.0  # the local Cloud Scheduler; 0 turns it off
    sweep_older_than_s: int = 10
    workers: int = 0  # >0: N pull workers share the router code instead of push delivery
    # Which of FUNCTIONS to serve: all of them for `up`; a test that never opens the dashboard
    # serves the router alone (Stack.serve starts a dashboard later). The router is required.
    functions: tuple[str, ...] = FUNCTIONS
    data_services: bool = True  # the local GCS and BigQuery stand-ins (ingestion, bigquery.*)
    inbox_bucket: str = "dagrelay-inbox"
    router_env: dict[str, str] = field(default_factory=dict)  # extra env (tests: crash points)
    # Local Cloud Run jobs for cloudrun.job, by name: {"command": [...], "args": [...], "env":
    # {...}}; any: the local Cloud Run starts and the router's cloud_run_endpoint points at it.
    run_jobs: dict[str, dict[str, Any]] = field(default_factory=_run_jobs_from_env)
    project: Path | None = None  # a team's project (dagrelay init): its handlers in the router
    emulator_host: str | None = None  # reuse a running emulator instead of starting one
    emulator_port: int = 0  # 0: pick a free port
    router_port: int = 0
    status_port: int = 0
    operate_port: int = 0
    workdir: Path = STATE_DIR


@dataclass
class StackInfo:
    """What a user (or a test) needs to talk to the running stack."""

    pubsub_emulator_host: str
    database_url: str
    project_id: str
    events_topic: str
    subscription: str
    alerts_topic: str
    dead_letter_topic: str
    storage_emulator_host: str | None
    bigquery_endpoint: str | None
    inbox_bucket: str
    router_url: str
    pids: dict[str, int]
    log_dir: str
    cloud_run_endpoint: str | None = None  # the local Cloud Run, when the stack has jobs
    status_url: str | None = None  # None: not served (StackConfig.functions); see url()
    operate_url: str | None = None  # the same dashboard with the operator's actions

    def url(self, function: str) -> str:
        """The URL of one of the stack's functions; StackError if the stack does not serve it."""
        urls = {"router": self.router_url, "status": self.status_url, "operate": self.operate_url}
        if function not in urls:
            raise StackError(f"no function {function!r}: the stack's are {', '.join(FUNCTIONS)}")
        url = urls[function]
        if url is None:
            raise StackError(
                f"this stack does not serve the {function} function: start it with "
                f"StackConfig(functions=...) naming it, or add it with Stack.serve({function!r})"
            )
        return url

    def env(self) -> dict[str, str]:
        data = {
            "STORAGE_EMULATOR_HOST": self.storage_emulator_host,
            "DAGRELAY_BIGQUERY_ENDPOINT": self.bigquery_endpoint,
            "DAGRELAY_CLOUD_RUN_ENDPOINT": self.cloud_run_endpoint,
        }
        return {
            **{key: value for key, value in data.items() if value},
            "PUBSUB_EMULATOR_HOST": self.pubsub_emulator_host,
            "DATABASE_URL": self.database_url,
            "DAGRELAY_PROJECT_ID": self.project_id,
            "DAGRELAY_EVENTS_TOPIC": self.events_topic,
            "DAGRELAY_ALERTS_TOPIC": self.alerts_topic,
            "DAGRELAY_DEAD_LETTER_TOPIC": self.dead_letter_topic,
            "DAGRELAY_INBOX_BUCKET": self.inbox_bucket,
            # The status function and dashboard (README: curl), when the stack serves it.
            **({"STATUS_URL": self.status_url} if self.status_url else {}),
        }


class Stack:
    def __init__(self, config: StackConfig | None = None) -> None:
        self.config = config or StackConfig()
        self.processes: list[ManagedProcess] = []
        self.info: StackInfo | None = None
        self.sweep_loop: SweepLoop | None = None
        self.emulator: ManagedProcess | None = None
        self.router_env: dict[str, str] = {}
        self.router_port = 0
        self._previous_env: dict[str, str | None] = {}  # restored by stop()

    def __enter__(self) -> StackInfo:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> StackInfo:
        c = self.config
        check_functions(c.functions)
        c.workdir.mkdir(parents=True, exist_ok=True)
        try:
            infra.ensure_database(c.database_url)
            infra.upgrade_database(c.database_url)
            emulator_host = c.emulator_host or self._start_emulator()
            self._previous_env = {key: os.environ.get(key) for key in OWN_ENV}
            data_env = self._start_data_services() if c.data_services else {}
            if c.run_jobs:
                data_env |= self._start_cloud_run()
            os.environ.update({"PUBSUB_EMULATOR_HOST": emulator_host, **data_env})
            self.router_env = {
                **os.environ,
                "PUBSUB_EMULATOR_HOST": emulator_host,
                "DATABASE_URL": c.database_url,
                "DAGRELAY_PROJECT_ID": c.project_id,
                "DAGRELAY_EVENTS_TOPIC": c.events_topic,
                "DAGRELAY_ALERTS_TOPIC": c.alerts_topic,
                "DAGRELAY_DEAD_LETTER_TOPIC": c.dead_letter_topic,
                "DAGRELAY_INBOX_BUCKET": c.inbox_bucket,
                **data_env,
                "PYTHONUNBUFFERED": "1",
                **project_env(c.project),
                **c.router_env,
            }
            router_port = c.router_port or processes.free_port()
            self.router_port = router_port
            self.processes.append(self._start_router())
            self.setup_pubsub(router_port)
            self.processes += [
                processes.start_worker(self.router_env, c.workdir, f"{c.subscription}", n)
                for n in range(c.workers)
            ]
            if c.sweep_interval_s > 0:
                self.sweep_loop = SweepLoop(
                    c.project_id,
                    c.events_topic,
                    interval_s=c.sweep_interval_s,
                    older_than_s=c.sweep_older_than_s,
                )
                self.sweep_loop.start()
            self.info = StackInfo(
                pubsub_emulator_host=emulator_host,
                database_url=c.database_url,
                project_id=c.project_id,
                events_topic=c.events_topic,
                subscription=c.subscription,
                alerts_topic=c.alerts_topic,
                dead_letter_topic=c.dead_letter_topic,
                storage_emulator_host=data_env.get("STORAGE_EMULATOR_HOST"),
                bigquery_endpoint=data_env.get("DAGRELAY_BIGQUERY_ENDPOINT"),
                inbox_bucket=c.inbox_bucket,
                router_url=f"http://127.0.0.1:{router_port}",
                pids={p.name: p.pid for p in self.processes},
                log_dir=str(c.workdir),
                cloud_run_endpoint=data_env.get(cloudrun.ENDPOINT_ENV),
            )
            self.serve(*(f for f in c.functions if f in DASHBOARDS))
        except BaseException:
            self.stop()
            self.info = None
            raise
        return self.info

    def serve(self, *functions: str) -> StackInfo:
        """Start the dashboard functions (status, operate) that this running stack does not
        serve yet; the stack's info (the object start() returned) gains their URLs and PIDs."""
        if self.info is None:
            raise StackError("the stack is not running")
        info, c = self.info, self.config
        for name in functions:
            if name not in DASHBOARDS:
                raise StackError(f"{name!r} is not a dashboard function ({', '.join(DASHBOARDS)})")
            if name == "status" and info.status_url is None:
                info.status_url = self._serve_dashboard(info, name, c.status_port)
            elif name == "operate" and info.operate_url is None:
                info.operate_url = self._serve_dashboard(info, name, c.operate_port)
        return info

    def _serve_dashboard(self, info: StackInfo, name: str, port: int) -> str:
        port = port or processes.free_port()
        proc = processes.start_router(port, self.router_env, self.config.workdir, target=name)
        self.processes.append(proc)
        info.pids[proc.name] = proc.pid
        return f"http://127.0.0.1:{port}"

    def setup_pubsub(self, router_port: int) -> None:
        """Topics and subscriptions, as terraform/ creates them: events -> router (push, or
        pull for the workers) with retry and dead-letter policies; dead letters -> router;
        alerts kept on a pull subscription for inspection. Safe to repeat (after an emulator
        restart, say)."""
        c = self.config
        events_push = (
            None if c.workers else infra.push_endpoint(router_port, c.project_id, c.events_topic)
        )
        infra.ensure_subscription(
            c.project_id,
            c.events_topic,
            c.subscription,
            push_endpoint=events_push,
            dead_letter_topic=c.dead_letter_topic,
        )
        infra.ensure_subscription(
            c.project_id,
            c.dead_letter_topic,
            f"{c.dead_letter_topic}-router",
            push_endpoint=infra.push_endpoint(router_port, c.project_id, c.dead_letter_topic),
            delivery=infra.DEAD_LETTERS,
        )
        infra.ensure_subscription(c.project_id, c.alerts_topic, f"{c.alerts_topic}-inbox")

    def _start_data_services(self) -> dict[str, str]:
        """GCS (gcp-storage-emulator) and BigQuery (bqemulator, reading gs:// URIs from the GCS
        stand-in's data directory); the inbox bucket and the datasets Terraform creates."""
        c = self.config
        gcs_dir = c.workdir / f"gcs-{os.getpid()}-{id(self)}"
        gcs_port = processes.free_port()
        self.processes.append(gcs.start_storage_emulator(gcs_port, gcs_dir))
        storage_host = f"http://127.0.0.1:{gcs_port}"
        local_bq = bigquery.start(c.project_id, gcs_dir, c.workdir)
        self.processes.append(local_bq.process)
        os.environ["STORAGE_EMULATOR_HOST"] = storage_host
        gcs.create_buckets(gcs.storage_client(c.project_id), [c.inbox_bucket])
        bigquery.create_datasets(local_bq, DATASETS)
        return {"STORAGE_EMULATOR_HOST": storage_host, **local_bq.env()}

    def _start_cloud_run(self) -> dict[str, str]:
        """The local Cloud Run with the configured jobs (their executions are subprocesses)."""
        c = self.config
        port = processes.free_port()
        jobs_file = c.workdir / f"run-jobs-{port}.json"
        jobs_file.write_text(json.dumps(c.run_jobs), encoding="utf-8")
        self.processes.append(cloudrun.start(port, jobs_file, c.workdir))
        return {cloudrun.ENDPOINT_ENV: f"http://127.0.0.1:{port}"}

    def _start_emulator(self) -> str:
        port = self.config.emulator_port or processes.free_port()
        self.emulator = processes.start_pubsub_emulator(
            port, self.config.project_id, self.config.workdir
        )
        self.processes.append(self.emulator)
        self.config.emulator_port = port
        return f"127.0.0.1:{port}"

    def restart_emulator(self) -> None:
        """Kill the emulator (its in-memory messages are lost) and start a new one on the same
        port with the same topology. Only for a stack that started its own emulator."""
        if self.emulator is None or self.info is None:
            raise StackError("this stack did not start the emulator it uses")
        self.emulator.stop()
        self.processes.remove(self.emulator)
        self._start_emulator()
        self.setup_pubsub(int(self.info.router_url.rsplit(":", 1)[1]))

    def stop(self) -> None:
        """Stop what this stack started: every process signalled at once, newest first."""
        if self.sweep_loop is not None:
            self.sweep_loop.stop()
            self.sweep_loop = None
        processes.stop_all(self.processes[::-1])
        self.processes.clear()
        for key, value in self._previous_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._previous_env = {}

    def reload_router(self) -> None:
        """Restart the router on its port (by PID): it imports the project's modules again."""
        index = next(i for i, p in enumerate(self.processes) if p.name.endswith(":router"))
        self.processes[index].stop()
        self.processes[index] = self._start_router()

    def _start_router(self) -> ManagedProcess:
        """The router, its code imported before gunicorn forks its worker when it takes the
        events (push); with pull workers it sees only dead letters, and imports on the first."""
        c = self.config
        return processes.start_router(
            self.router_port, self.router_env, c.workdir, warm=c.workers == 0
        )

    def check_alive(self) -> None:
        for proc in self.processes:
            if not proc.alive():
                raise StackError(f"{proc.name} exited:\n{proc.log_tail()}")


def check_functions(functions: tuple[str, ...]) -> None:
    """StackError, before anything starts, for a function the stack cannot serve or without the
    router (the push subscriptions' endpoint)."""
    unknown = [name for name in functions if name not in FUNCTIONS]
    if unknown:
        raise StackError(f"no function {unknown[0]!r}: the stack's are {', '.join(FUNCTIONS)}")
    if "router" not in functions:
        raise StackError("a stack serves the router: its push subscriptions deliver to it")


def project_env(project: Path | None) -> dict[str, str]:
    """The router's environment for a team's project: the project on its path, every module
    of its handlers/ and pipelines/ as handler_modules, its sql/ as the pipelines directory."""
    if project is None:
        return {}
    team = Project.at(project)
    env = {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(team.root), os.environ.get("PYTHONPATH")])),
        "DAGRELAY_HANDLER_MODULES": ",".join(team.modules()),
    }
    if (team.root / "sql").is_dir():
        env["DAGRELAY_PIPELINES_DIR"] = str(team.root / "sql")
    return env


class ProjectWatcher:
    """Tells when a project's files (handlers, pipelines, SQL) changed since the last look."""

    def __init__(self, project: Path) -> None:
        self.project = Project.at(project)
        self.seen = self._fingerprint()

    def _fingerprint(self) -> frozenset[tuple[str, int, int]]:
        found = set()
        for name, path in self.project.files().items():
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            found.add((name, stat.st_mtime_ns, stat.st_size))
        return frozenset(found)

    def changed(self) -> bool:
        now = self._fingerprint()
        changed, self.seen = now != self.seen, now
        return changed


# -- the state file that lets ``down`` stop what ``up`` started --------------------------------


def state_file(workdir: Path = STATE_DIR) -> Path:
    return workdir / "state.json"


def write_state(info: StackInfo, owner_pid: int, workdir: Path = STATE_DIR) -> None:
    """Atomically (write, then rename): a reader (`down`, a test) never sees half a file."""
    state = {"owner_pid": owner_pid, **asdict(info)}
    path = state_file(workdir)
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(state, indent=2))
    os.replace(partial, path)


def read_state(workdir: Path = STATE_DIR) -> dict[str, object] | None:
    path = state_file(workdir)
    if not path.exists():
        return None
    state: dict[str, object] = json.loads(path.read_text())
    return state
