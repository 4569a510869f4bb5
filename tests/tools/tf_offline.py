"""Build what `terraform test` needs offline: schema-only provider plugins and a CLI config.

    python -m tests.tools.tf_offline OUT_DIR

(run by `make terraform-plugins` with the interpreter of .terraform-offline/venv, which has the
PyPI package `tf` for its generated plugin-protocol messages). For each provider in PROVIDERS it
fetches the provider's prebuilt CDKTF package from npm (`npm pack`, cached in OUT_DIR/npm), reads
its schema (tests/tools/tf_schema.py), encodes Terraform's GetProviderSchema and GetMetadata answers
into OUT_DIR/plugins/<name>/, and writes the launcher `terraform-provider-<name>` that runs
tests/tools/tf_schema_provider.py on them. OUT_DIR/terraformrc points Terraform's
`dev_overrides` at those launchers. A plugin is rebuilt only when its inputs change.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from tf.gen import tfplugin_pb2 as pb  # type: ignore[import-not-found,unused-ignore]

from tests.tools import tf_schema

# Provider -> its npm package; the package's cdktf.provider.version is the provider's version
# (@cdktf/provider-google 16.12.1 is google 6.50.0, @cdktf/provider-random 12.0.1 is random 3.7.2).
PROVIDERS = {
    "google": "@cdktf/provider-google@16.12.1",
    "random": "@cdktf/provider-random@12.0.1",
}
# Bump to rebuild every plugin when tf_schema.py or this encoder changes what they serve.
FORMAT = "1"

_NESTING = {"single": 1, "list": 2, "set": 3, "map": 4, "group": 5}


def _block(block: dict[str, Any]) -> Any:
    out = pb.Schema.Block()
    for name, attr in sorted(block.get("attributes", {}).items()):
        out.attributes.add(
            name=name,
            type=json.dumps(attr["type"]).encode(),
            required=attr.get("required", False),
            optional=attr.get("optional", False),
            computed=attr.get("computed", False),
            sensitive=attr.get("sensitive", False),
        )
    for name, nested in sorted(block.get("block_types", {}).items()):
        out.block_types.add(
            type_name=name,
            block=_block(nested["block"]),
            nesting=_NESTING[nested["nesting_mode"]],
            min_items=nested.get("min_items", 0),
            max_items=nested.get("max_items", 0),
        )
    return out


def encode(schema: dict[str, Any]) -> tuple[bytes, bytes]:
    """GetProviderSchema.Response and GetMetadata.Response of the one provider in schema."""
    (provider,) = schema["provider_schemas"].values()
    response = pb.GetProviderSchema.Response(
        provider=pb.Schema(version=0, block=_block(provider["provider"]["block"])),
        server_capabilities=pb.ServerCapabilities(get_provider_schema_optional=True),
    )
    for kind in ("resource_schemas", "data_source_schemas"):
        target = getattr(response, kind)
        for name, entry in provider[kind].items():
            target[name].CopyFrom(pb.Schema(version=entry["version"], block=_block(entry["block"])))
    metadata = pb.GetMetadata.Response(
        server_capabilities=pb.ServerCapabilities(get_provider_schema_optional=True),
        resources=[
            pb.GetMetadata.ResourceMetadata(type_name=n)
            for n in sorted(provider["resource_schemas"])
        ],
        data_sources=[
            pb.GetMetadata.DataSourceMetadata(type_name=n)
            for n in sorted(provider["data_source_schemas"])
        ],
    )
    return response.SerializeToString(), metadata.SerializeToString()


def _npm_tarball(spec: str, cache: Path) -> Path:
    """The package's tarball under cache (`npm pack` once; the tarball is kept)."""
    cache.mkdir(parents=True, exist_ok=True)
    kept = cache / (spec.lstrip("@").replace("/", "-").replace("@", "-") + ".tgz")
    if not kept.exists():
        packed = subprocess.run(
            ["npm", "pack", "--silent", spec], cwd=cache, check=True, capture_output=True, text=True
        ).stdout.split()[-1]
        (cache / packed).rename(kept)
    return kept


def _plugin(name: str, spec: str, out: Path, python: str) -> None:
    directory = out / "plugins" / name
    stamp = directory / "STAMP"
    here = Path(__file__).resolve().parent
    inputs = hashlib.sha256(
        f"{FORMAT} {spec} ".encode()
        + (here / "tf_schema.py").read_bytes()
        + Path(__file__).read_bytes()
    ).hexdigest()
    if stamp.exists() and stamp.read_text() == inputs:
        return
    schema = tf_schema.extract(_npm_tarball(spec, out / "npm"))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "schema.json").write_text(json.dumps(schema, sort_keys=True), encoding="utf-8")
    schema_pb, metadata_pb = encode(schema)
    (directory / "SCHEMA.pb").write_bytes(schema_pb)
    (directory / "METADATA.pb").write_bytes(metadata_pb)
    _certificate(directory)
    launcher = directory / f"terraform-provider-{name}"
    server = here / "tf_schema_provider.py"
    command = shlex.join([python, str(server), str(directory / "SCHEMA.pb")])
    launcher.write_text(
        "#!/bin/sh\n# Written by tests/tools/tf_offline.py: a schema-only provider.\n"
        f"exec {command}\n",
        encoding="utf-8",
    )
    launcher.chmod(0o755)
    version = next(iter(schema["provider_versions"].values()))
    stamp.write_text(inputs)
    sys.stderr.write(f"tf_offline: {name} {version} schema from {spec}: {len(schema_pb)} bytes\n")


def _certificate(directory: Path) -> None:
    """The plugin's TLS identity: go-plugin's client insists on TLS and trusts the one certificate
    the handshake carries, for the name "localhost". A throwaway key for a loopback socket."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    (directory / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "cert.der").write_bytes(cert.public_bytes(serialization.Encoding.DER))


def _cli_config(out: Path) -> None:
    lines = [
        "# Written by tests/tools/tf_offline.py: the schema-only providers (make terraform-check).",
        "provider_installation {",
        "  dev_overrides {",
        *(f'    "hashicorp/{n}" = "{(out / "plugins" / n).resolve()}"' for n in PROVIDERS),
        "  }",
        "  direct {}",
        "}",
        "",
    ]
    (out / "terraformrc").write_text("\n".join(lines), encoding="utf-8")


def build(out: Path) -> None:
    out = out.resolve()  # the launchers run from each root's directory
    out.mkdir(parents=True, exist_ok=True)
    for name, spec in PROVIDERS.items():
        _plugin(name, spec, out, os.path.abspath(sys.executable))
    _cli_config(out)


if __name__ == "__main__":
    build(Path(sys.argv[1]))
