"""The schema reader of the offline `terraform test` (tests/tools/tf_schema.py) on a cut-down
file of a prebuilt CDKTF provider package (tests/fixtures/cdktf/widget.js)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.tools.tf_schema import SchemaError, read_source

FIXTURE = Path(__file__).parents[1] / "fixtures" / "cdktf" / "widget.js"


@pytest.fixture(scope="module")
def widget() -> dict[str, Any]:
    schemas: dict[str, Any] = {"resource_schemas": {}, "data_source_schemas": {}}
    read_source(FIXTURE.name, FIXTURE.read_text(encoding="utf-8"), schemas)
    block: dict[str, Any] = schemas["resource_schemas"]["example_widget"]["block"]
    return block


def test_an_argument_without_reset_is_required_and_one_with_reset_optional(
    widget: dict[str, Any],
) -> None:
    assert widget["attributes"]["name"] == {"type": "string", "required": True}
    # The package does not say whether an optional argument is also computed: taken as both.
    assert widget["attributes"]["labels"] == {
        "type": ["map", "string"],
        "optional": True,
        "computed": True,
    }


def test_getters_without_an_argument_are_computed_attributes(widget: dict[str, Any]) -> None:
    attributes = widget["attributes"]
    assert attributes["self_link"] == {"type": "string", "computed": True}
    assert attributes["effective_labels"] == {"type": ["map", "string"], "computed": True}
    assert attributes["endpoints"] == {
        "type": ["list", ["object", {"address": "string", "weights": ["list", "number"]}]],
        "computed": True,
    }


def test_blocks_keep_their_nesting_limits_and_contents(widget: dict[str, Any]) -> None:
    spec = widget["block_types"]["spec"]
    assert (spec["nesting_mode"], spec["min_items"], spec["max_items"]) == ("list", 1, 1)
    assert spec["block"]["attributes"]["state"] == {"type": "string", "computed": True}
    rule = spec["block"]["block_types"]["rule"]
    assert rule["nesting_mode"] == "set"
    assert "min_items" not in rule
    assert "max_items" not in rule
    assert rule["block"]["attributes"] == {
        "port": {"type": "number", "required": True},
        "tags": {"type": ["set", "string"], "optional": True, "computed": True},
    }
    timeouts = widget["block_types"]["timeouts"]
    assert timeouts["nesting_mode"] == "single"
    assert set(timeouts["block"]["attributes"]) == {"create"}


def test_an_unknown_argument_type_is_an_error() -> None:
    source = FIXTURE.read_text(encoding="utf-8").replace('"stringMap"', '"objectMap"')
    schemas: dict[str, Any] = {"resource_schemas": {}, "data_source_schemas": {}}
    with pytest.raises(SchemaError, match="map/objectMap"):
        read_source(FIXTURE.name, source, schemas)
