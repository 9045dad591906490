"""The Ray executor: per-frame work on a Ray cluster through Ray Data; the driver keeps the writer.

`RayExecutor.map_batches(batches, prepare, finish)` has the `pipeline.executors.Executor`
signature and runs the same two functions the local executor runs, so a frame gives the same
row, thumbnail and vector on either:

- `prepare` (read and decode one file) runs in Ray Data tasks, one block of frames per task,
  spread over the cluster's nodes;
- `finish` (the model on a batch) runs in a pool of actors. Each actor unpickles `finish` once,
  in its constructor, after setting TensorFlow's threads to the actor's CPUs: a model inside
  `finish` (an `Embedder` pickles as the recipe that builds it) is built once per actor;
- results stream back to the driver (`iter_batches`), which commits them with its one writer
  (DuckDB has one), as it does on the local path. Results come in the order they finish.

**Exactly once.** Ray retries a task whose worker died and restarts a killed actor, which
redoes its batch; a result is the output of one finished task, so the driver sees each item
once (and drops, with a log line, any result it has already seen). A driver killed with SIGKILL
loses only what it had not committed; the store says what is done, so the next run plans only
the rest.

**Pool size.** Ray Data's known hang (ray-project/ray issue 44687): when the actors hold every
CPU, the read tasks that feed them never get one, and the job waits forever. `plan_pool` leaves
each node a share of its CPUs for reads, and `stall_seconds` without a finished batch stops the
run with an error instead of a stuck job.

**Paths.** Every node reads the frames at the path the driver has (a shared folder mounted at
the same place): `check_paths` looks for a sample of the files on every node before the work
starts, and says which node cannot see them.

`ray_session(address)` joins the cluster (`auto` or HOST:PORT), or starts a local Ray with this
machine's cores when there is none, and says clearly when Ray is not installed or the cluster
cannot be reached. `counts` tells, after a run, how many items each node prepared and finished.

`RayFrameSpread` is `analyze`'s use of the same executor: the pixel detectors' pass over every
frame, in tasks of whole days (no actors), each reading the store's thumbnails read-only.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import pickle
import queue
import socket
import sys
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

from pipeline.errors import InputError

Item = TypeVar("Item")
Prepared = TypeVar("Prepared")
Result = TypeVar("Result")

log = logging.getLogger(__name__)

INSTALL = "pip install -r requirements-ray.txt"
#: CPUs one read task asks for: reads decode at draft scale, a fraction of the model's work.
READ_CPUS = 0.5
#: TensorFlow gains little past this many threads on one model: more CPUs make more actors.
MAX_ACTOR_CPUS = 8
#: Items per read task (a Ray Data block): about four blocks per CPU, so a few dozen frames still
#: spread over the nodes, and a million frames do not make a million tiny tasks.
MIN_ITEMS_PER_READ, MAX_ITEMS_PER_READ = 4, 64


def import_ray():
    """Ray, or an `InputError` that gives the command installing it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise InputError(
            f"--executor ray needs Ray (ray[data]), which is not installed here ({exc}): "
            f"{sys.executable} -m {INSTALL}"
        ) from None
    return ray


@contextlib.contextmanager
def ray_session(address: str | None):
    """Joined to the Ray cluster at `address` (`auto`, HOST:PORT) for the block; without one, a
    local Ray with this machine's cores, stopped after. A Ray already started in this process
    (by a caller, a test) is used as it is."""
    ray = import_ray()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    _quiet_ray_data()
    if ray.is_initialized():
        yield ray
        return
    kwargs = dict(
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
        configure_logging=True,
    )
    try:
        if address:
            _reachable(address)
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=os.cpu_count() or 1, **kwargs)
    except (ConnectionError, OSError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise InputError(
            f"cannot reach {where}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
            ". Start the head node with `ray start --head`, and each worker with `ray start "
            "--address HEAD:6379`, then give --ray-address HEAD:6379 (or `auto` on a node of "
            "the cluster); see README 'Running on a cluster'"
        ) from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _reachable(address: str, timeout: float = 10.0) -> None:
    """Raise OSError when HOST:PORT does not accept a connection (`ray.init` would retry for
    minutes). `auto` and `ray://` addresses are left to Ray, which fails at once without one."""
    host, sep, port = address.rpartition(":")
    if not sep or "://" in address or not port.isdigit():
        return
    with socket.create_connection((host, int(port)), timeout=timeout):
        pass


@dataclass(frozen=True)
class Pool:
    """How the per-batch work is spread: `actors` actors of `actor_cpus` CPUs (and `actor_gpus`
    GPUs), TensorFlow with `threads` threads in each, and reads asking `read_cpus` each."""

    actors: int
    actor_cpus: float
    actor_gpus: float
    threads: int
    read_cpus: float


def plan_pool(nodes: Sequence[dict]) -> Pool:
    """The actor pool for the alive nodes' resources (`ray.nodes()[i]['Resources']`).

    With GPUs: one actor per GPU, with one CPU, and the rest of the CPUs read. Without: each
    node keeps max(READ_CPUS, an eighth of its CPUs) for reads (so reads always run, the hang
    of ray issue 44687 cannot happen), and gives the rest to actors of at most MAX_ACTOR_CPUS,
    sized for the smallest node so that every node holds at least one.
    """
    cpus = [float(n.get("CPU", 0)) for n in nodes if n.get("CPU", 0) > 0]
    if not cpus:
        raise InputError(
            "the Ray cluster has no node with a CPU: start a worker with "
            "`ray start --address HEAD:6379`"
        )
    gpus = sum(int(n.get("GPU", 0)) for n in nodes)
    if gpus:
        return Pool(actors=gpus, actor_cpus=1.0, actor_gpus=1.0, threads=1, read_cpus=READ_CPUS)
    spare = [c - max(READ_CPUS, c / 8) for c in cpus]
    spare = [s for s in spare if s >= READ_CPUS]  # a node of 1/2 CPU only reads
    if not spare:
        raise InputError(
            "no node of the Ray cluster has a CPU to spare for the model beside "
            "its reads: give the nodes at least 1 CPU (`ray start --num-cpus`)"
        )
    smallest = min(spare)
    per_actor = smallest / math.ceil(smallest / MAX_ACTOR_CPUS)
    actors = sum(max(1, int(s // per_actor + 1e-9)) for s in spare)
    return Pool(
        actors=actors,
        actor_cpus=per_actor,
        actor_gpus=0.0,
        threads=max(1, math.ceil(per_actor)),
        read_cpus=READ_CPUS,
    )


def check_paths(ray, paths: Sequence[str]) -> None:
    """Fail with a clear message when a node of the cluster cannot read one of `paths`."""
    for node, missing in unreadable(ray, paths).items():
        raise InputError(
            f"node {node} cannot read {missing[0]} ({len(missing)} of {len(paths)} sampled "
            "files): every node must see the frames at the same path as the driver (a shared "
            "folder mounted at the same place on each); see README 'Running on a cluster'"
        )


def unreadable(ray, paths: Sequence[str]) -> dict[str, list[str]]:
    """{node: the paths among `paths` it cannot read}, for the nodes that miss any."""
    if not paths:
        return {}
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0)(_missing)
    nodes = [n for n in ray.nodes() if n.get("Alive") and n["Resources"].get("CPU", 0) > 0]
    refs = {
        node["NodeManagerAddress"] + f" ({node['NodeID'][:8]})": probe.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
        ).remote(list(paths))
        for node in nodes
    }
    found = {node: ray.get(ref, timeout=120) for node, ref in refs.items()}
    return {node: missing for node, missing in found.items() if missing}


def _missing(paths: list[str]) -> list[str]:
    return [path for path in paths if not os.access(path, os.R_OK)]


def _node() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


def _prepare_block(block: dict, prepare: Callable, setup: Callable | None) -> dict:
    """Ray Data task: `prepare` on a block of pickled items (after `setup()`)."""
    if setup is not None:
        setup()
    done = [prepare(pickle.loads(item)) for item in block["item"]]
    return {
        "index": block["index"],
        "prepared": [pickle.dumps(p) for p in done],
        "prepared_on": [_node()] * len(done),
    }


def _prepare_only(block: dict, prepare: Callable, setup: Callable | None) -> dict:
    """Ray Data task without a model after it: the prepared items are the result."""
    if setup is not None:
        setup()
    done = [prepare(pickle.loads(item)) for item in block["item"]]
    return {
        "result": [pickle.dumps((list(map(int, block["index"])), done))],
        "prepared_on": [pickle.dumps(Counter({_node(): len(done)}))],
        "finished_on": [_node()],
    }


class _Finish:
    """Ray Data actor: unpickles `finish` once (a model in it is built here, once per actor),
    after setting TensorFlow's threads to the actor's CPUs; then `finish` on each batch."""

    def __init__(self, finish: bytes, threads: int):
        from pipeline.models import keras_setup

        keras_setup.use_threads(threads)
        self.finish = pickle.loads(finish)
        self.node = _node()

    def __call__(self, block: dict) -> dict:
        prepared = [pickle.loads(p) for p in block["prepared"]]
        result = self.finish(prepared)
        return {
            "result": [pickle.dumps((list(map(int, block["index"])), result))],
            "prepared_on": [pickle.dumps(Counter(block["prepared_on"]))],
            "finished_on": [self.node],
        }


class RayExecutor:
    """`prepare` in Ray Data tasks, `finish` in an actor pool, results streamed to the driver.

    Use inside `ray_session`. `batch_size` frames go to `finish` at a time (the local path's
    batch); `stall_seconds` without a finished batch stops the run (`InputError`). Without a
    `finish`, each task prepares `items_per_task` items (default: about four tasks per CPU,
    `MIN_ITEMS_PER_READ` to `MAX_ITEMS_PER_READ` items) and asks for `task_cpus` CPUs.
    """

    def __init__(
        self,
        batch_size: int,
        stall_seconds: float = 600.0,
        paths: Callable[[object], str] | None = None,
        path_sample: int = 8,
        setup: Callable[[], None] | None = None,
        items_per_task: int | None = None,
        task_cpus: float = 1.0,
    ):
        self.batch_size = max(1, int(batch_size))
        self.items_per_task = items_per_task
        self.task_cpus = float(task_cpus)
        self.setup = setup
        self.stall_seconds = float(stall_seconds)
        self.paths = paths
        self.path_sample = path_sample
        self.prepared_per_node: Counter = Counter()
        self.finished_per_node: Counter = Counter()
        self.pool: Pool | None = None

    def map_batches(
        self,
        batches: Sequence[Sequence[Item]],
        prepare: Callable[[Item], Prepared],
        finish: Callable[[list[Prepared]], Result] | None,
    ) -> Iterator[Result]:
        """Yield `finish(prepared items)` per batch of up to `batch_size` items, as they finish.
        `finish=None` (ingest: no model) skips the actors: each result is a list of prepared
        items, and every CPU reads."""
        items = [item for batch in batches for item in batch]
        if not items:
            return
        yield from self.results(self._stream(self.dataset(items, prepare, finish)))

    def dataset(self, items: Sequence[Item], prepare: Callable, finish: Callable | None):
        """The Ray Dataset of the work: one row per finished batch, with `result` (pickled
        item indices and result), `prepared_on` and `finished_on` (nodes). Lazy: nothing runs
        until it is read (`results`, or written out as Parquet by `bench/ray_cluster.py`)."""
        import ray
        from ray.data import ActorPoolStrategy

        if self.paths is not None:
            step = max(1, len(items) // self.path_sample)
            check_paths(ray, [self.paths(item) for item in items[::step][: self.path_sample]])
        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        self.pool = pool = plan_pool(nodes)
        _quiet_ray_data()

        cpus = sum(float(n.get("CPU", 0)) for n in nodes)
        per_read = self.items_per_task or min(
            MAX_ITEMS_PER_READ, max(MIN_ITEMS_PER_READ, math.ceil(len(items) / (4 * cpus)))
        )
        n_blocks = math.ceil(len(items) / per_read)
        dataset = ray.data.from_items(
            [{"index": i, "item": pickle.dumps(item)} for i, item in enumerate(items)],
            override_num_blocks=n_blocks,
        )
        work = {"prepare": prepare, "setup": self.setup}
        if finish is None:
            return dataset.map_batches(
                _prepare_only, fn_kwargs=work, batch_size=None, num_cpus=self.task_cpus
            )
        dataset = dataset.map_batches(
            _prepare_block, fn_kwargs=work, batch_size=None, num_cpus=pool.read_cpus
        )
        return dataset.map_batches(
            _Finish,
            fn_constructor_args=(pickle.dumps(finish), pool.threads),
            batch_size=self.batch_size,
            compute=ActorPoolStrategy(size=min(pool.actors, n_blocks)),
            num_cpus=pool.actor_cpus,
            num_gpus=pool.actor_gpus or None,
        )

    def results(self, rows: Iterable[dict]) -> Iterator:
        """Each row's result, once: a row whose items came already is dropped (with a log
        line); the nodes' counts are kept."""
        seen: set[int] = set()
        for row in rows:
            indices, result = pickle.loads(row["result"])
            fresh = [i for i in indices if i not in seen]
            if not fresh:
                log.warning("ray: a batch of %d items came back twice; dropped", len(indices))
                continue
            if len(fresh) != len(indices):
                raise RuntimeError("ray: a batch came back holding items already committed")
            seen.update(indices)
            self.prepared_per_node.update(pickle.loads(row["prepared_on"]))
            self.finished_per_node[row["finished_on"]] += len(indices)
            yield result

    def _stream(self, dataset) -> Iterator[dict]:
        """The dataset's rows, from a thread; `stall_seconds` without one is an error."""
        rows: queue.Queue = queue.Queue(maxsize=4)
        stop = threading.Event()
        done = object()

        def hand_over(item) -> bool:
            while not stop.is_set():
                try:
                    rows.put(item, timeout=0.5)
                    return True
                except queue.Full:
                    continue
            return False

        def pull() -> None:
            iterator = iter(dataset.iter_rows())
            try:
                for row in iterator:
                    if not hand_over(row):
                        return  # the driver stopped: closing the iterator ends the run
                hand_over(done)
            except BaseException as exc:  # handed to the driver's thread, raised there
                hand_over(exc)
            finally:
                close = getattr(iterator, "close", None)
                if close is not None:
                    close()

        thread = threading.Thread(target=pull, name="ray-results", daemon=True)
        thread.start()
        try:
            while True:
                try:
                    row = rows.get(timeout=self.stall_seconds)
                except queue.Empty:
                    raise InputError(
                        f"the Ray run made no progress for {self.stall_seconds:.0f} s (no batch "
                        "finished): the cluster may lack free CPUs for the read tasks (ray issue "
                        "44687), a node may be stuck, or the model is slow to load; check "
                        "`ray status`, then run again (what was committed stays)"
                    ) from None
                if row is done:
                    return
                if isinstance(row, BaseException):
                    raise _explain(row)
                yield row
        finally:
            stop.set()


def _quiet_ray_data() -> None:
    """No progress bars or execution notices from Ray Data: the driver has its own bar."""
    from ray.data import DataContext

    logging.getLogger("ray.data").setLevel(logging.ERROR)
    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.enable_operator_progress_bars = False
    context.print_on_execution_start = False
    context.verbose_stats_logs = False


def _explain(exc: BaseException) -> BaseException:
    """A Ray failure as the one line a user needs, when it is one we know."""
    text = str(exc)
    if "_Finish" in text and (
        "__init__" in text
        or "constructor" in text.lower()
        or "ActorDiedError" in type(exc).__name__
    ):
        cause = [line for line in text.splitlines() if line.strip()][-1]
        return InputError(
            f"every Ray actor failed to load the model, so nothing was written: {cause.strip()}"
        )
    return exc


#: CPUs (and threads) of one task of a detector's per-frame pass (`RayFrameSpread`): the
#: `background` detector scores in threads while another reads the next days' references.
SPREAD_TASK_CPUS = 2
#: Frames in one such task: at least MIN (each task also decodes the references of the days
#: around its own, a week on each side for `background`), at most MAX (a task of ~40 s on two
#: CPUs, well inside `ray_stall_seconds`; a node lost costs little), else about three tasks
#: per task slot of the cluster.
MIN_SPREAD_FRAMES, MAX_SPREAD_FRAMES = 2_000, 20_000


class RayFrameSpread:
    """A detector's per-frame pass over the pixels (`pipeline.detectors.batch.FrameSpread`) in
    Ray tasks, for `analyze --executor ray`: the driver fits, the cluster scores every frame.

    The frames go out as groups of whole camera-clock days (`day_groups`; the `background`
    detector compares a frame with the same time on the days around it, which its task reads
    itself), one group a task of `SPREAD_TASK_CPUS` CPUs, through `RayExecutor` (so a task
    whose worker died is retried, a result comes back once, `stall_seconds` without one is an
    error). A task reads its thumbnails from the store read-only: the driver holds no
    connection while the tasks run (DuckDB lets many processes read a file none writes), so
    every node must see the store at the driver's path. That is checked on each node first,
    once a run; where a node cannot, the passes run on the driver (as without a spread) and
    `unseen` says why, for the run's notes: a run of `run --executor ray` whose store is not on
    the shared folder still ends with its analysis.
    The rows come back in the batch's order; `frames_per_node` counts who scored what.
    """

    def __init__(self, db, chunk: int, stall_seconds: float = 600.0):
        self.db = os.path.abspath(db)  # the workers do not share the driver's folder
        self.chunk = int(chunk)
        self.stall_seconds = float(stall_seconds)
        self.frames_per_node: Counter = Counter()
        self.tasks = 0
        self.unseen: str | None = None
        self._seen: bool | None = None

    def run(self, fn, batch):
        import numpy as np
        import ray

        from pipeline.detectors.batch import day_groups

        if not len(batch) or not self._store_seen(ray):
            return fn(batch)
        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        cpus = [float(n.get("CPU", 0)) for n in nodes if n.get("CPU", 0) > 0]
        task_cpus = max(READ_CPUS, min([SPREAD_TASK_CPUS, *cpus]))
        slots = max(1, int(sum(c // task_cpus for c in cpus)))
        size = min(MAX_SPREAD_FRAMES, max(MIN_SPREAD_FRAMES, math.ceil(len(batch) / (3 * slots))))
        groups = day_groups(batch.local_time, size)
        executor = RayExecutor(1, self.stall_seconds, items_per_task=1, task_cpus=task_cpus)
        prepare = functools.partial(
            _spread_part, fn=fn, db=self.db, chunk=self.chunk, threads=math.ceil(task_cpus)
        )
        items = [(i, batch.light(rows)) for i, rows in enumerate(groups)]
        out = None
        for done in executor.map_batches([items], prepare, None):
            for i, rows_out, node in done:
                if out is None:
                    out = np.full((len(batch), *rows_out.shape[1:]), np.nan, rows_out.dtype)
                out[groups[i]] = rows_out
                self.frames_per_node[node] += len(groups[i])
                self.tasks += 1
        return out

    def _store_seen(self, ray) -> bool:
        """Whether every node can read the store (asked once); if not, `unseen` says which
        node could not and what to do, and the passes run on the driver instead."""
        if self._seen is None:
            blind = unreadable(ray, [self.db])
            self._seen = not blind
            if blind:
                self.unseen = (
                    f"node {', '.join(blind)} cannot read {self.db}, so the pixel detectors "
                    "scored their frames on this machine: for the cluster to score them, keep "
                    "the store on the shared folder, at the same path on every node"
                )
        return self._seen


def _spread_part(item, fn, db: str, chunk: int, threads: int):
    """Ray task of `RayFrameSpread`: `fn` on one group of frames, with a read-only reader of
    the store's thumbnails and `threads` threads."""
    from pathlib import Path

    from pipeline import threads as thread_pool
    from pipeline.pixels import ThumbnailReader

    index, part = item
    thread_pool.use_workers(threads)
    part.pixels = ThumbnailReader(Path(db), chunk=chunk, workers=threads, read_only=True)
    return index, fn(part), _node()
