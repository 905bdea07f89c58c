"""Run by the GNS3 venv's python (tests/gns3_env.py): validate .gns3a files with GNS3's code.

For each file: ``server`` loads it into gns3-server's pydantic ``Appliance`` model (what GNS3
3.x checks); ``gui`` validates it with jsonschema's Draft 4 validator against gns3-gui's
``gns3/schemas/appliance.json`` (what "Import appliance" checks first); ``strict`` does the same
with ``additionalProperties: false`` added to every object (as the gns3-registry CI does), so
a key GNS3 does not name fails. Prints {file: {check: error or null}} as JSON.
"""

import copy
import importlib.util
import json
import sys
from pathlib import Path

import jsonschema
from gns3server.schemas.controller.appliances import Appliance


def gui_schema() -> dict:
    spec = importlib.util.find_spec("gns3")  # finds the package without importing Qt
    folder = Path(next(iter(spec.submodule_search_locations)))
    return json.loads((folder / "schemas" / "appliance.json").read_text())


def strict(schema: dict) -> dict:
    schema = copy.deepcopy(schema)

    def close(node: object) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                node.setdefault("additionalProperties", False)
            for value in node.values():
                close(value)
        elif isinstance(node, list):
            for value in node:
                close(value)

    close(schema)
    # appliance_id is GNS3 3.x's (the server model requires it); the GUI schema predates it.
    schema["properties"].setdefault("appliance_id", {"type": "string"})
    return schema


def first_error(validator: jsonschema.Draft4Validator, data: dict) -> str | None:
    error = jsonschema.exceptions.best_match(validator.iter_errors(data))
    return None if error is None else f"{list(error.absolute_path)}: {error.message}"


def main(paths: list[str]) -> None:
    schema = gui_schema()
    gui = jsonschema.Draft4Validator(schema, format_checker=jsonschema.FormatChecker())
    closed = jsonschema.Draft4Validator(strict(schema), format_checker=jsonschema.FormatChecker())
    results = {}
    for path in paths:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        try:
            Appliance.model_validate(data)
            server = None
        except Exception as e:  # pydantic.ValidationError, reported as text
            server = str(e)
        results[path] = {"server": server, "gui": first_error(gui, data),
                         "strict": first_error(closed, data)}
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1:])
