"""What the cluster membership playbooks decide from the queues (filter plugin rabbitmq_membership): which
quorum queues a leaving node holds and where they gain a replacement member, what removal would lose (and so
refuses), which queues grow onto a new node, when a new member has caught up. Listings have the shape
`rabbitmqctl --formatter json list_queues name type members online pid` prints on RabbitMQ 4.0."""

from __future__ import annotations

import json

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.bundle.ops.plugins.filter import rabbitmq_membership as m

A, B, C, D = (f"rabbit@mq{i}" for i in range(1, 5))


def listing(vhost: str, *rows: dict) -> dict:
    """One item of the registered loop, as the playbook hands it to the filter."""
    return {"item": vhost, "stdout": json.dumps(list(rows))}


def quorum(name: str, *members: str, online: tuple[str, ...] | None = None) -> dict:
    online = members if online is None else online
    return {"name": name, "type": "quorum", "members": list(members), "online": list(online),
            "pid": f"<{members[0]}.1234.0>"}  # fmt: skip


def classic(name: str, node: str) -> dict:
    return {"name": name, "type": "classic", "members": "", "online": "", "pid": f"<{node}.1695.0>"}


def queues(*items: dict) -> list[dict]:
    return m.rabbitmq_queue_listing(list(items))


def test_listing_flattens_vhosts_and_reads_the_home_node_from_the_pid() -> None:
    qs = queues(listing("app", quorum("jobs", A, B, C), classic("tmp", C)), listing("/", quorum("q", A)))
    assert [(q["vhost"], q["name"]) for q in qs] == [("app", "jobs"), ("app", "tmp"), ("/", "q")]
    assert qs[1]["home"] == C and qs[1]["members"] == [] and qs[0]["online"] == [A, B, C]


def test_listing_that_is_no_json_names_the_vhost() -> None:
    with pytest.raises(AnsibleFilterError, match="'app'"):
        queues({"item": "app", "stdout": "Error: vhost down"})


def test_a_full_cluster_has_no_room_so_members_are_only_removed() -> None:
    plan = m.rabbitmq_removal_plan(queues(listing("app", quorum("jobs", A, B, C))), C, [A, B])
    assert plan == {"quorum": ["app/jobs"], "add": [], "classic": [], "streams": [], "refusal": ""}


def test_a_replacement_member_goes_where_the_queue_has_none() -> None:
    qs = queues(listing("app", quorum("jobs", A, B, C), quorum("other", A, B)))
    plan = m.rabbitmq_removal_plan(qs, C, [A, B, D])
    assert plan["add"] == [{"vhost": "app", "name": "jobs", "node": D}]
    assert plan["quorum"] == ["app/jobs"]


def test_classic_queues_and_stream_replicas_on_the_node_refuse_the_removal() -> None:
    stream = {"name": "events", "type": "stream", "members": [A, C], "online": [A, C], "pid": f"<{A}.1.0>"}
    qs = queues(listing("app", classic("reports", C), classic("on-mq1", A), stream))
    plan = m.rabbitmq_removal_plan(qs, C, [A, B])
    assert plan["classic"] == ["app/reports"] and plan["streams"] == ["app/events"]
    assert "app/reports" in plan["refusal"] and "app/events" in plan["refusal"]
    assert "on-mq1" not in plan["refusal"]


def test_queues_without_a_member_follow_the_patterns_as_rabbitmq_matches_them() -> None:
    qs = queues(listing("app", quorum("jobs", A, B), quorum("jobs.retry", A, B), quorum("has", A, B, C)),
                listing("other", quorum("jobs", A, B)))  # fmt: skip
    everything = m.rabbitmq_queues_without_member(qs, C)
    assert everything == [{"vhost": "app", "name": "jobs"}, {"vhost": "app", "name": "jobs.retry"},
                          {"vhost": "other", "name": "jobs"}]  # fmt: skip
    # A pattern matches anywhere in the name, unless anchored (re:run in RabbitMQ).
    assert len(m.rabbitmq_queues_without_member(qs, C, "app", "jobs")) == 2
    assert m.rabbitmq_queues_without_member(qs, C, "^app$", "^jobs$") == [{"vhost": "app", "name": "jobs"}]
    with pytest.raises(AnsibleFilterError, match="regular expression"):
        m.rabbitmq_queues_without_member(qs, C, "(")


def test_queues_without_a_majority_online() -> None:
    qs = queues(listing("app", quorum("ok", A, B, C, online=(A, B)), quorum("lost", A, B, C, online=(A,)),
                        quorum("pair", A, B, online=(A,))))  # fmt: skip
    assert m.rabbitmq_queues_without_majority(qs) == ["app/lost (1 of 3 members online)",
                                                      "app/pair (1 of 2 members online)"]  # fmt: skip


def row(node: str, state: str, applied: int, commit: int, membership: str | None = None) -> dict:
    r = {"Node Name": node, "Raft State": state, "Last Applied": applied, "Commit Index": commit}
    if membership is not None:
        r["Membership"] = membership
    return r


def test_on_rabbitmq_4_a_member_has_caught_up_once_promoted_to_voter() -> None:
    leader = row(A, "leader", 900, 900, "voter")
    assert not m.rabbitmq_member_caught_up([leader, row(D, "follower", 900, 900, "promotable")], D)
    assert m.rabbitmq_member_caught_up(json.dumps([leader, row(D, "follower", 10, 10, "voter")]), D)
    assert not m.rabbitmq_member_caught_up([leader, row(D, "noproc", 0, 0, "voter")], D)


def test_before_rabbitmq_4_a_member_has_caught_up_within_the_slack_of_the_leaders_commit_index() -> None:
    leader = row(A, "leader", 5000, 5000)
    assert not m.rabbitmq_member_caught_up([leader, row(D, "follower", 100, 100)], D)
    assert m.rabbitmq_member_caught_up([leader, row(D, "follower", 4950, 4950)], D)
    assert not m.rabbitmq_member_caught_up([leader], D), "no member on the node yet"
    assert not m.rabbitmq_member_caught_up([row(D, "follower", 1, 1)], D), "no leader"
