"""Which feature flags the rabbitmq role enables, and whether the metadata store asked for is possible.

Input: the parsed JSON of `rabbitmqctl --formatter json list_feature_flags name state stability` (a list of
{name, state, stability}). `enable_feature_flag all` would enable every stable flag, and on RabbitMQ 4.1 and
later `khepri_db` is stable: "all" would move the cluster's metadata from Mnesia to Khepri, a one-way
migration, as a side effect of a routine converge. So the role enables flags by name, and `khepri_db` only
when the inventory chose that store (`rabbitmq_metadata_store: khepri`).
"""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleFilterError

KHEPRI = "khepri_db"
STORES = ("mnesia", "khepri")


def _flags(flags: Any) -> dict[str, dict[str, str]]:
    if not isinstance(flags, list) or not all(isinstance(f, dict) and "name" in f for f in flags):
        raise AnsibleFilterError("expected the list_feature_flags JSON: a list of {name, state, stability}")
    return {str(f["name"]): f for f in flags}


def _store(store: str) -> str:
    if store not in STORES:
        raise AnsibleFilterError(f"metadata store must be one of {', '.join(STORES)}, got {store!r}")
    return store


def rabbitmq_feature_flags_to_enable(flags: Any, store: str = "mnesia") -> list[str]:
    """The disabled stable flags, by name, in the order listed; `khepri_db` only for the khepri store."""
    _store(store)
    return [
        name
        for name, flag in _flags(flags).items()
        if flag.get("stability") == "stable"
        and flag.get("state") == "disabled"
        and (name != KHEPRI or store == "khepri")
    ]


def rabbitmq_metadata_store_problem(flags: Any, store: str = "mnesia") -> str:
    """Why the store asked for cannot be had on these nodes ('' when it can): Khepri cannot be left once
    enabled, and before 4.1 its flag is experimental (or absent)."""
    khepri = _flags(flags).get(KHEPRI)
    if _store(store) == "mnesia":
        if khepri and khepri.get("state") == "enabled":
            return (
                "the cluster's metadata store is already Khepri (feature flag khepri_db enabled), which cannot be "
                "undone: set rabbitmq_metadata_store to khepri"
            )
        return ""
    if khepri is None:
        return "this RabbitMQ has no khepri_db feature flag (Khepri needs 4.0 or later, stable from 4.1)"
    if khepri.get("state") != "enabled" and khepri.get("stability") != "stable":
        return (
            f"khepri_db is {khepri.get('stability')} in this RabbitMQ: the role enables Khepri only where it is a "
            "stable feature flag (RabbitMQ 4.1 and later)"
        )
    return ""


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "rabbitmq_feature_flags_to_enable": rabbitmq_feature_flags_to_enable,
            "rabbitmq_metadata_store_problem": rabbitmq_metadata_store_problem,
        }
