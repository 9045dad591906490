"""The actor pool's size for a cluster's nodes, and the executor on the two-node cluster."""

from __future__ import annotations

import operator

import pytest

from pipeline.errors import InputError
from pipeline.ray_executor import RayExecutor, plan_pool


def test_two_cores_leave_reads_a_share_and_give_tensorflow_both():
    pool = plan_pool([{"CPU": 2.0}])
    assert (pool.actors, pool.actor_cpus, pool.threads, pool.actor_gpus) == (1, 1.5, 2, 0.0)
    assert pool.actor_cpus + pool.read_cpus <= 2.0  # a read always finds a CPU (ray issue 44687)


def test_eight_nodes_of_eight_cores_get_an_actor_each():
    pool = plan_pool([{"CPU": 8.0}] * 8)
    assert (pool.actors, pool.actor_cpus, pool.threads) == (8, 7.0, 7)


def test_a_big_node_gets_several_actors_and_a_small_one_still_one():
    pool = plan_pool([{"CPU": 64.0}, {"CPU": 4.0}])
    assert pool.actor_cpus == 3.5 and pool.threads == 4
    assert pool.actors == 16 + 1  # 56 spare CPUs / 3.5, and the small node's one


def test_gpus_get_one_actor_each_and_the_cpus_read():
    pool = plan_pool([{"CPU": 32.0, "GPU": 2.0}, {"CPU": 8.0}])
    assert (pool.actors, pool.actor_gpus, pool.actor_cpus) == (2, 1.0, 1.0)


def test_a_cluster_without_cpus_is_refused():
    with pytest.raises(InputError, match="no node with a CPU"):
        plan_pool([{"GPU": 1.0, "CPU": 0.0}])


def test_both_nodes_work_and_every_item_comes_back_once(ray_cluster):
    executor = RayExecutor(batch_size=4)
    batches = [list(range(i, i + 8)) for i in range(0, 64, 8)]
    results = list(executor.map_batches(batches, operator.neg, sum))
    assert sum(results) == -sum(range(64))
    assert sum(executor.prepared_per_node.values()) == 64
    assert sum(executor.finished_per_node.values()) == 64
    assert len(executor.prepared_per_node) == 2, executor.prepared_per_node
    assert len(executor.finished_per_node) == 2, executor.finished_per_node


def test_without_a_model_every_item_is_prepared_once_on_both_nodes(ray_cluster):
    executor = RayExecutor(batch_size=4)
    results = list(executor.map_batches([list(range(40))], operator.neg, None))
    assert sorted(x for result in results for x in result) == sorted(-i for i in range(40))
    assert len(executor.prepared_per_node) == 2, executor.prepared_per_node


def test_nodes_of_half_a_cpu_only_read():
    pool = plan_pool([{"CPU": 0.5}, {"CPU": 4.0}])
    assert (pool.actors, pool.actor_cpus) == (1, 3.5)
    with pytest.raises(InputError, match="no node of the Ray cluster has a CPU to spare"):
        plan_pool([{"CPU": 0.5}])
