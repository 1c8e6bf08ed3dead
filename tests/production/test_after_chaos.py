"""The last check of the production scenario, after the cluster's chaos (molecule/resources/cluster_chaos.yml:
nodes lost, removed and added, cut off, restarted one by one): once Prometheus has scraped every target again
(the node restarted last may have been scraped while it was down, and shows down until its next scrape), the
doctor passes. Its table: reports/production/doctor-after-chaos.txt."""

from __future__ import annotations

from production import Deployment, assert_passes


def test_the_doctor_passes_after_the_chaos(deployment: Deployment) -> None:
    deployment.wait_targets_up()
    assert_passes(deployment, "after-chaos")
