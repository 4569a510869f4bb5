"""A schema-only Terraform provider plugin: it serves a provider's schema and nothing else.

Terraform starts it as `terraform-provider-<name>` (a launcher written by tests/tools/tf_offline.py)
for `terraform test` runs whose providers are all `mock_provider`s: the mocks plan and apply on
their own, but Terraform still asks the real plugin for the schema and to validate configuration.
So this plugin answers GetMetadata and GetProviderSchema with the bytes tf_offline.py encoded from
the provider's npm package (SCHEMA.pb, METADATA.pb beside each other), accepts every validation
and configuration, and refuses everything that would touch a real API: outside `mock_provider` a
plan fails at once instead of pretending.

It speaks go-plugin's handshake (protocol 1, Terraform plugin protocol 6, gRPC over loopback TCP
with TLS: the certificate tf_offline.py made) with grpcio alone: the messages are pre-encoded and
the empty answers are empty bytes, so no protobuf runtime is needed here.

Usage: tf_schema_provider.py [--shared] SCHEMA.pb (METADATA.pb, key.pem, cert.pem, cert.der beside
it). As a plugin Terraform starts (the launcher, dev_overrides) it costs a Python start per
Terraform process and phase; --shared is one long-lived server that Terraform reattaches to
(TF_REATTACH_PROVIDERS), which tests/tools/tf_plan.py uses: each `terraform test` about twice as
fast.
"""

from __future__ import annotations

import base64
import os
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path

import grpc

MAGIC_COOKIE = (
    "TF_PLUGIN_MAGIC_COOKIE",
    "d602bf8f470bc67ca7faa0386276bbdd4330efaf76d1a219cb4d6991ca9872b2",
)

# Answered with an empty message: no diagnostics, nothing changed, no functions.
ACCEPTED = (
    "ValidateProviderConfig",
    "ValidateResourceConfig",
    "ValidateDataResourceConfig",
    "ValidateEphemeralResourceConfig",
    "ConfigureProvider",
    "StopProvider",
    "GetFunctions",
    "GetResourceIdentitySchemas",
)
# Anything that would read or change real infrastructure.
REFUSED = (
    "UpgradeResourceState",
    "ReadResource",
    "PlanResourceChange",
    "ApplyResourceChange",
    "ImportResourceState",
    "MoveResourceState",
    "ReadDataSource",
    "CallFunction",
    "OpenEphemeralResource",
)

Handler = Callable[[bytes, grpc.ServicerContext], bytes]


def _constant(answer: bytes) -> Handler:
    def handle(_request: bytes, _context: grpc.ServicerContext) -> bytes:
        return answer

    return handle


def _refuse(method: str) -> Handler:
    def handle(_request: bytes, context: grpc.ServicerContext) -> bytes:
        context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            f"{method}: this is a schema-only provider for `terraform test` with mock_provider",
        )
        raise AssertionError("unreachable")  # abort raises

    return handle


def _no_stdio(_request: bytes, _context: grpc.ServicerContext) -> Iterator[bytes]:
    return iter(())  # go-plugin's stdio stream: nothing to mirror


def _server(schema_file: Path, stopped: threading.Event, *, shared: bool) -> grpc.Server:
    schema = schema_file.read_bytes()
    metadata = schema_file.with_name("METADATA.pb").read_bytes()

    def shutdown(_request: bytes, _context: grpc.ServicerContext) -> bytes:
        if not shared:  # a shared server outlives each Terraform process
            stopped.set()
        return b""

    provider: dict[str, grpc.RpcMethodHandler] = {
        "GetMetadata": grpc.unary_unary_rpc_method_handler(_constant(metadata)),
        "GetProviderSchema": grpc.unary_unary_rpc_method_handler(_constant(schema)),
    }
    provider.update({m: grpc.unary_unary_rpc_method_handler(_constant(b"")) for m in ACCEPTED})
    provider.update({m: grpc.unary_unary_rpc_method_handler(_refuse(m)) for m in REFUSED})
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler("tfplugin6.Provider", provider),
            grpc.method_handlers_generic_handler(
                "plugin.GRPCController", {"Shutdown": grpc.unary_unary_rpc_method_handler(shutdown)}
            ),
            grpc.method_handlers_generic_handler(
                "plugin.GRPCStdio", {"StreamStdio": grpc.unary_stream_rpc_method_handler(_no_stdio)}
            ),
        )
    )
    return server


def serve_plugin(schema_file: Path) -> None:
    """One plugin process per Terraform process, started by Terraform (dev_overrides)."""
    stopped = threading.Event()
    server = _server(schema_file, stopped, shared=False)
    here = schema_file.parent
    credentials = grpc.ssl_server_credentials(
        [((here / "key.pem").read_bytes(), (here / "cert.pem").read_bytes())]
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    # go-plugin's handshake line: core protocol 1, app protocol 6, network, address, gRPC, and the
    # server certificate the client is to trust (DER, unpadded base64).
    cert = base64.b64encode((here / "cert.der").read_bytes()).decode().rstrip("=")
    sys.stdout.write(f"1|6|tcp|127.0.0.1:{port}|grpc|{cert}\n")
    sys.stdout.flush()
    stopped.wait()
    server.stop(grace=None)


def serve_shared(schema_file: Path) -> None:
    """One server for many Terraform processes (TF_REATTACH_PROVIDERS, tests/tools/tf_plan.py):
    no TLS (go-plugin reattaches without it), its address on stdout, until it is terminated."""
    server = _server(schema_file, threading.Event(), shared=True)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    sys.stdout.write(f"127.0.0.1:{port}\n")
    sys.stdout.flush()
    server.wait_for_termination()


def main(argv: list[str]) -> int:
    if argv[1:2] == ["--shared"]:
        serve_shared(Path(argv[2]))
        return 0
    if os.environ.get(MAGIC_COOKIE[0]) != MAGIC_COOKIE[1]:
        sys.stderr.write("This is a Terraform provider plugin: Terraform starts it, not you.\n")
        return 1
    serve_plugin(Path(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
