"""One Ray cluster for the whole test run: two nodes of 2 CPUs on this machine
(`ray.cluster_utils.Cluster`), joined by this process, so every Ray test also spreads its work
over two nodes. Started on the first Ray test, stopped at the end of the session. Tests here are
marked `ray` (select them with `-m ray`, leave them out with `-m 'not ray'`)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

NODE_CPUS = 2


def pytest_collection_modifyitems(items):
    """Marks the tests here `ray`, and for `make test`'s `pytest -n` (pytest-xdist, `--dist
    loadgroup`) puts them in one group, so one worker runs them all on one cluster (xdist hands
    out the largest groups first, so their long run goes beside the other tests)."""
    here = os.path.dirname(__file__) + os.sep
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.ray)
            item.add_marker(pytest.mark.xdist_group("ray"))


@pytest.fixture(scope="session")
def ray_cluster():
    """The two-node cluster, joined; yields `ray.cluster_utils.Cluster` (its `.address` lets a
    child process join with `--ray-address`)."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": NODE_CPUS, "include_dashboard": False}
    )
    cluster.add_node(num_cpus=NODE_CPUS)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture(autouse=True)
def _idle_cluster(request):
    """Before a test that uses the cluster, wait (up to a minute) until every CPU of it is free
    again: the actors and tasks of the test before (a run stopped as stuck leaves its tasks
    sleeping) are let go of asynchronously, and a test that counts the work per node must not
    find one node still held."""
    if "ray_cluster" not in request.fixturenames:
        return
    import time

    import ray

    request.getfixturevalue("ray_cluster")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        total = ray.cluster_resources().get("CPU", 0)
        if ray.available_resources().get("CPU", 0) >= total:
            return
        time.sleep(0.2)
