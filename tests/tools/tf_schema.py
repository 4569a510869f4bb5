"""A Terraform provider's schema, recovered from the provider's prebuilt CDKTF package (npm).

`terraform test` with `mock_provider` still needs each provider's schema: to decode every resource
block (argument names, types, nested blocks, required arguments) and to know which attributes are
unknown until apply. Without a registry the real provider binaries cannot be had, but npm's
`@cdktf/provider-google` / `@cdktf/provider-random` are generated from exactly that schema, and
their JavaScript keeps it readable:

- `synthesizeHclAttributes()` of a resource class, and `<struct>ToHclTerraform(struct)` of each
  nested block, list every configurable argument: `isBlock`, `type` (simple/list/set/map/struct)
  and `storageClassType` (string, stringList, <Struct>List, ...);
- a class's constructor builds its nested blocks and computed objects:
  `this._x = new <Struct>List(this, "x", <is a set>)` or `new <Struct>OutputReference(this, "x")`
  (at most one), or `new cdktf.StringMap(this, "x")`;
- getters name the attributes with their Terraform names (`this.getStringAttribute('x')`), and an
  argument is optional exactly when its class has `reset<Name>()`.

What the package does not keep: whether an optional argument is also computed (only computed-only
attributes are marked), and which attributes are sensitive. Every optional argument is taken as
optional + computed (an unset one is unknown in a plan rather than null: a reference to it can't
fail where the real provider would have a value), and SENSITIVE names the sensitive attributes
our configurations touch.

`extract(tarball)` returns the schema in the JSON shape of `terraform providers schema -json`;
tests/tools/tf_schema_provider.py serves it to Terraform (ARCHITECTURE.md, Terraform).
"""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path
from typing import Any

# Attributes the package cannot mark sensitive (resource type -> attribute names).
SENSITIVE: dict[str, set[str]] = {
    "random_password": {"result", "bcrypt_hash"},
    "google_secret_manager_secret_version": {"secret_data"},
    "google_sql_user": {"password"},
}

_TOP = re.compile(r"^(?:class (\w+) extends ([\w.]+) \{|function (\w+)\(struct\) \{)$", re.M)
_HCL_ENTRY = re.compile(
    r"^\s+(\w+): \{\n\s+value: (.*),\n\s+isBlock: (true|false),\n"
    r'\s+type: "(\w+)",\n\s+storageClassType: "(\w+)",\n\s+\},$',
    re.M,
)
_FIELD = re.compile(r'this\._(\w+) = new ([\w.]+)\(this, "(\w+)"(?:, (true|false))?\);')
_GETTER = re.compile(r"^    get (\w+)\(\) \{\n\s+return (.*);\n", re.M)
_ATTR_GETTER = re.compile(r"(?:(cdktf\.Fn\.tolist)\()?this\.(\w+)\('(\w+)'\)")
_RESOURCE_TYPE = re.compile(r"terraformResourceType: '(\w+)'")

_SIMPLE = {"string": "string", "number": "number", "boolean": "bool"}
_COLLECTION = {
    "stringList": "string",
    "numberList": "number",
    "booleanList": "bool",
    "stringMap": "string",
    "numberMap": "number",
    "booleanMap": "bool",
}
_GETTER_TYPES: dict[str, Any] = {
    "getStringAttribute": "string",
    "getNumberAttribute": "number",
    "getBooleanAttribute": "bool",
    "getListAttribute": ["list", "string"],
    "getNumberListAttribute": ["list", "number"],
    "getStringMapAttribute": ["map", "string"],
    "getNumberMapAttribute": ["map", "number"],
    "getBooleanMapAttribute": ["map", "bool"],
    "interpolationForAttribute": "dynamic",
}
_MAP_CLASSES = {
    "cdktf.StringMap": ["map", "string"],
    "cdktf.NumberMap": ["map", "number"],
    "cdktf.BooleanMap": ["map", "bool"],
    "cdktf.AnyMap": ["map", "dynamic"],
    "cdktf.StringMapList": ["list", ["map", "string"]],
    "cdktf.NumberMapList": ["list", ["map", "number"]],
    "cdktf.BooleanMapList": ["list", ["map", "bool"]],
}


class SchemaError(Exception):
    """The package's JavaScript has a shape this reader does not know."""


def _chunks(source: str) -> tuple[dict[str, str], dict[str, str]]:
    """The top-level classes (name -> text) and struct functions (name -> text) of one file."""
    classes: dict[str, str] = {}
    functions: dict[str, str] = {}
    starts = list(_TOP.finditer(source))
    for i, m in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(source)
        if m.group(1):
            classes[m.group(1)] = source[m.start() : end]
        else:
            functions[m.group(3)] = source[m.start() : end]
    return classes, functions


def _lower_first(name: str) -> str:
    return name[:1].lower() + name[1:]


class _File:
    """One generated file (lib/<resource>/index.js) and the schema blocks it describes."""

    def __init__(self, source: str) -> None:
        self.classes, self.functions = _chunks(source)

    def block(self, class_name: str, hcl_text: str, *, provider: bool = False) -> dict[str, Any]:
        """The schema block of a class: its configurable entries (hcl_text) and its getters."""
        text = self.classes.get(class_name, "")
        fields = {m.group(3): m for m in _FIELD.finditer(text)}
        attributes: dict[str, Any] = {}
        block_types: dict[str, Any] = {}
        for name, value, is_block, kind, storage in _HCL_ENTRY.findall(hcl_text):
            if provider and name == "alias":
                continue  # a meta-argument, not the provider's
            camel = re.search(r"(?:this\._|struct\.)(\w+)", value)
            optional = provider or (
                camel is not None
                and f"reset{camel.group(1)[:1].upper()}{camel.group(1)[1:]}()" in text
            )
            if is_block == "true":
                block_types[name] = self._nested_block(
                    name, kind, storage, fields.get(name), optional
                )
            else:
                flags = {"optional": True, "computed": True} if optional else {"required": True}
                attributes[name] = {"type": _argument_type(kind, storage), **flags}
        for name, type_ in self._computed(text, fields).items():
            if name not in attributes and name not in block_types:
                attributes[name] = {"type": type_, "computed": True}
        out: dict[str, Any] = {"attributes": attributes}
        if block_types:
            out["block_types"] = block_types
        return out

    def _nested_block(
        self, name: str, kind: str, storage: str, field: re.Match[str] | None, optional: bool
    ) -> dict[str, Any]:
        struct = (
            storage[: -len("List")]
            if kind in ("list", "set") and storage.endswith("List")
            else storage
        )
        hcl = self.functions.get(f"{_lower_first(struct)}ToHclTerraform", "")
        nested: dict[str, Any] = {
            "nesting_mode": {"struct": "single", "list": "list", "set": "set"}[kind],
            "block": self.block(f"{struct}OutputReference", hcl),
        }
        if field is not None and field.group(2).endswith("OutputReference") and kind != "struct":
            nested["max_items"] = 1
        if not optional and kind != "struct":
            nested["min_items"] = 1
        return nested

    def _computed(self, text: str, fields: dict[str, re.Match[str]]) -> dict[str, Any]:
        """Attributes read through getters (computed-only ones are never in the HCL entries)."""
        by_private = {m.group(1): m for m in fields.values()}
        found: dict[str, Any] = {}
        for _getter, body in _GETTER.findall(text):
            attr = _ATTR_GETTER.search(body)
            if attr is not None and attr.group(2) in _GETTER_TYPES:
                type_ = _GETTER_TYPES[attr.group(2)]
                if attr.group(1):  # cdktf.Fn.tolist(...): a set
                    type_ = ["set", type_[1]]
                found[attr.group(3)] = type_
                continue
            private = re.fullmatch(r"this\._(\w+)", body)
            if private and private.group(1) in by_private:
                field = by_private[private.group(1)]
                type_ = self._field_type(field)
                if type_ is not None:
                    found[field.group(3)] = type_
        return found

    def _field_type(self, field: re.Match[str]) -> Any:
        cls, is_set = field.group(2), field.group(4) == "true"
        if cls in _MAP_CLASSES:
            return _MAP_CLASSES[cls]
        for suffix, collection in (
            ("OutputReference", "list"),
            ("List", "set" if is_set else "list"),
            ("Map", "map"),
        ):
            if cls.endswith(suffix) and not cls.startswith("cdktf."):
                struct = cls[: -len(suffix)]
                inner = self.block(f"{struct}OutputReference", "")
                obj = {k: v["type"] for k, v in inner["attributes"].items()}
                return [collection, ["object", obj]]
        return None


def _argument_type(kind: str, storage: str) -> Any:
    if kind == "simple" and storage in _SIMPLE:
        return _SIMPLE[storage]
    if kind in ("list", "set", "map") and storage in _COLLECTION:
        return [kind, _COLLECTION[storage]]
    raise SchemaError(f"unknown argument type {kind}/{storage}")


def _synthesize_hcl(text: str) -> str:
    start = text.find("synthesizeHclAttributes() {")
    if start < 0:
        raise SchemaError("a resource class without synthesizeHclAttributes()")
    return text[start:]


def read_source(name: str, source: str, schemas: dict[str, Any]) -> None:
    """Add the provider, resources and data sources of one generated file to schemas."""
    file = _File(source)
    for class_name, text in file.classes.items():
        base = _TOP.match(text)
        kind = base.group(2) if base else ""
        if kind == "cdktf.TerraformProvider":
            block = file.block(class_name, _synthesize_hcl(text), provider=True)
            schemas["provider"] = {"version": 0, "block": block}
        elif kind in ("cdktf.TerraformResource", "cdktf.TerraformDataSource"):
            type_match = _RESOURCE_TYPE.search(text)
            if type_match is None:
                raise SchemaError(f"{name}: {class_name} has no terraformResourceType")
            type_name = type_match.group(1)
            block = file.block(class_name, _synthesize_hcl(text))
            for attr in SENSITIVE.get(type_name, ()):
                if attr in block["attributes"]:
                    block["attributes"][attr]["sensitive"] = True
            key = "resource_schemas" if kind == "cdktf.TerraformResource" else "data_source_schemas"
            schemas[key][type_name] = {"version": 0, "block": block}


def extract(tarball: Path) -> dict[str, Any]:
    """The schema of the provider whose CDKTF package (`npm pack`'s tarball) is tarball."""
    schemas: dict[str, Any] = {"resource_schemas": {}, "data_source_schemas": {}}
    meta: dict[str, str] | None = None
    with tarfile.open(tarball) as tar:
        for member in tar:
            if member.name == "package/package.json":
                meta = json.loads(_read(tar, member))["cdktf"]["provider"]
            elif re.fullmatch(r"package/lib/[^/]+/index\.js", member.name):
                read_source(member.name, _read(tar, member), schemas)
    if meta is None or "provider" not in schemas or not schemas["resource_schemas"]:
        raise SchemaError(f"{tarball}: no package.json, provider or resources found")
    return {
        "format_version": "1.0",
        "provider_versions": {meta["name"]: meta["version"]},
        "provider_schemas": {meta["name"]: schemas},
    }


def _read(tar: tarfile.TarFile, member: tarfile.TarInfo) -> str:
    handle = tar.extractfile(member)
    if handle is None:
        raise SchemaError(f"{member.name} is not a file")
    with handle:
        return handle.read().decode("utf-8")
