"""`rabbitmq_importable_definitions(data)`: a definitions export made importable again.

RabbitMQ 3.10 and 4.0 export an operator policy (a runtime parameter of component `operator_policy`) with its
definition as a list of [key, value] pairs, and `import_definitions` then refuses the file ("definition must be
a dictionary"). Those definitions become dictionaries; everything else is returned unchanged.
"""

from __future__ import annotations

import copy
from typing import Any


def _as_dict(definition: Any) -> Any:
    if isinstance(definition, list) and all(isinstance(p, list | tuple) and len(p) == 2 for p in definition):
        return {str(key): value for key, value in definition}
    return definition


def rabbitmq_importable_definitions(data: dict[str, Any]) -> dict[str, Any]:
    fixed = copy.deepcopy(data)
    for parameter in fixed.get("parameters") or []:
        value = parameter.get("value")
        if parameter.get("component") == "operator_policy" and isinstance(value, dict) and "definition" in value:
            value["definition"] = _as_dict(value["definition"])
    return fixed


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"rabbitmq_importable_definitions": rabbitmq_importable_definitions}
