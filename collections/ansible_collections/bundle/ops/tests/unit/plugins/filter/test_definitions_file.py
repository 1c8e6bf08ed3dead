"""A definitions export made importable again (filter bundle.ops.rabbitmq_importable_definitions): RabbitMQ 3.10
and 4.0 export an operator policy's definition as [key, value] pairs, which their own import refuses ("definition
must be a dictionary"; seen in the default scenario's backup-and-restore test once the sandbox had one)."""

from __future__ import annotations

from ansible_collections.bundle.ops.plugins.filter import rabbitmq_definitions_file as f

EXPORT = {
    "vhosts": [{"name": "app"}],
    "parameters": [
        {"vhost": "app", "component": "operator_policy", "name": "guard-rails",
         "value": {"pattern": ".*", "apply-to": "queues", "priority": 0,
                   "definition": [["max-length", 1000000], ["message-ttl", 60000]]}},
        {"vhost": "app", "component": "vhost-limits", "name": "limits", "value": {"max-queues": 1000}},
        {"vhost": "app", "component": "shovel", "name": "s", "value": {"src-uri": "amqp://", "definition": [["a", 1]]}},
    ],
    "policies": [{"vhost": "app", "name": "p", "pattern": "^jobs$", "definition": {"delivery-limit": 50}}],
}  # fmt: skip


def test_operator_policy_definitions_become_dictionaries() -> None:
    fixed = f.rabbitmq_importable_definitions(EXPORT)
    assert fixed["parameters"][0]["value"]["definition"] == {"max-length": 1000000, "message-ttl": 60000}
    assert EXPORT["parameters"][0]["value"]["definition"][0] == ["max-length", 1000000], "the input is not changed"


def test_everything_else_is_left_as_it_is() -> None:
    fixed = f.rabbitmq_importable_definitions(EXPORT)
    assert fixed["parameters"][1:] == EXPORT["parameters"][1:]
    assert fixed["policies"] == EXPORT["policies"] and fixed["vhosts"] == EXPORT["vhosts"]
    already = {"parameters": [{"component": "operator_policy", "value": {"definition": {"max-length": 5}}}]}
    assert f.rabbitmq_importable_definitions(already) == already
    assert f.rabbitmq_importable_definitions({"vhosts": []}) == {"vhosts": []}
