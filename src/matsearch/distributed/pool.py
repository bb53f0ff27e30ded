"""The Ray actors of a sharded collection: R replicas per shard, calls routed, failures named, the dead replaced.

Each replica is a Ray actor that Ray restarts when its process dies (it reopens the shard from its folder);
one that Ray gives up on (killed for good, its node lost) is replaced here by a new actor on the same
folder when a call meets it. A read goes to one replica of each shard, in turn, and to the next replica
when that one fails, so with two or more replicas a single dead actor costs no error. A shard none of
whose replicas answered is named in a `ShardUnavailableError` — or, for a search that allows partial
results, left out of a result that says so (merge.py). Writes go to replica 0, the shard's writer.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, GetTimeoutError, RayActorError, RayTaskError

from ..errors import CollectionError
from .actor import ShardActor
from .layout import shard_folder

log = logging.getLogger(__name__)
_ACTOR = ray.remote(ShardActor)
_OPTIONS = {"max_restarts": -1, "max_task_retries": 0, "num_cpus": 0, "max_concurrency": 4,
            "scheduling_strategy": "SPREAD"}  # across the cluster's nodes (which all see the shards' folders)
_LOST = (RayActorError, ActorUnavailableError, GetTimeoutError)  # a replica that did not answer


class ShardUnavailableError(CollectionError):
    """Shards none of whose replicas answered; `shards` lists them."""

    def __init__(self, message: str, shards: list[int]):
        super().__init__(message)
        self.shards = shards


@dataclass(frozen=True)
class Pending:
    """Calls started on the shards: each shard's call, and the replica and Ray reference answering it."""

    calls: dict
    refs: dict
    writers: bool


class ShardPool:
    """Actors for `shards` × `replicas` shard folders under `root`; `create`: the settings a writer makes a new
    shard with (None: the shards exist). A read-only pool opens every replica read-only."""

    def __init__(self, root: Path, shards: int, replicas: int, *, writable: bool, create: dict | None = None):
        self.root, self.shards, self.replicas, self.writable = Path(root), shards, replicas, writable
        self.create = create
        self._turn = itertools.count()
        self._actors = [[self._start(s, 0)] for s in range(shards)]  # the other replicas once these are up

    def _start(self, shard: int, replica: int):
        writer = self.writable and replica == 0
        return _ACTOR.options(**_OPTIONS).remote(str(shard_folder(self.root, shard)), writable=writer,
                                                 create=self.create if writer else None)

    def actor(self, shard: int, replica: int = 0):
        """The Ray actor handle of one replica of one shard."""
        return self._actors[shard][replica]

    def ready(self) -> None:
        """Start the other replicas once replica 0 of every shard has opened it (a writer makes a new shard),
        and wait until they have opened it too."""
        self.gather({s: "ping" for s in range(self.shards)}, writers=True)
        for shard, row in enumerate(self._actors):
            row += [self._start(shard, r) for r in range(1, self.replicas)]
        for replica in range(1, self.replicas):
            failed = {}
            for shard, row in enumerate(self._actors):
                try:
                    ray.get(row[replica].ping.remote())
                except (*_LOST, RayTaskError) as exc:
                    failed[shard] = exc
            if failed:
                raise self._unavailable(failed)

    def gather(self, calls: dict, *, writers: bool = False, partial: bool = False,
               timeout: float | None = None) -> dict:
        """Run `calls` ({shard: method name, or (method name, args…)}) on one replica of each shard, in
        parallel: {shard: answer}. `writers`: on replica 0 only; else a replica that does not answer is
        replaced by the next one. With `partial`, shards none of whose replicas answered are left out;
        without, they raise ShardUnavailableError naming them. An error the shard itself raised (bad input,
        a missing id) is raised as it is — for writes, once every shard's part has committed or failed."""
        return self.collect(self.submit(calls, writers=writers), partial=partial, timeout=timeout)

    def submit(self, calls: dict, *, writers: bool = False) -> "Pending":
        """Start `calls` (as `gather` takes them) and return at once; `collect` waits for the answers."""
        calls = {s: (c,) if isinstance(c, str) else tuple(c) for s, c in calls.items()}
        turn = next(self._turn)
        refs = {s: self._submit(s, 0 if writers else (turn + s) % self.replicas, call) for s, call in calls.items()}
        return Pending(calls, refs, writers)

    def collect(self, pending: "Pending", *, partial: bool = False, timeout: float | None = None) -> dict:
        """The answers to calls `submit` started: see `gather`."""
        tries = {s: 0 for s in pending.calls}
        refs, answers, failed = dict(pending.refs), {}, {}
        due = {s: _due(timeout) for s in refs}  # every shard's call has `timeout` from now, not from its turn here
        error = None  # a shard's own error; writes raise it once the other shards' parts are done, none running on
        while refs:
            shard, (replica, ref) = next(iter(refs.items()))
            del refs[shard]
            try:
                answers[shard] = ray.get(ref, timeout=_left(due[shard]))
            except RayTaskError as exc:
                error = error or exc
                if not pending.writers:
                    break
            except _LOST as exc:
                self._lost(shard, replica, exc)
                tries[shard] += 1
                if pending.writers or tries[shard] >= self.replicas:
                    failed[shard] = exc
                else:
                    refs[shard] = self._submit(shard, (replica + 1) % self.replicas, pending.calls[shard])
                    due[shard] = _due(timeout)
        if error is not None:
            raise error.cause if isinstance(error.cause, Exception) else error
        if failed and not partial:
            raise self._unavailable(failed)
        return answers

    def _submit(self, shard: int, replica: int, call: tuple):
        method, *args = call
        return replica, getattr(self._actors[shard][replica], method).remote(*args)

    def _lost(self, shard: int, replica: int, exc: Exception) -> None:
        """A replica did not answer: Ray restarts a crashed one itself; one it gave up on is replaced now."""
        log.warning("shard %d replica %d did not answer: %s", shard, replica, _reason(exc))
        if isinstance(exc, ActorDiedError):
            self._actors[shard][replica] = self._start(shard, replica)

    def _unavailable(self, failed: dict) -> ShardUnavailableError:
        shards = sorted(failed)
        named = "; ".join(f"shard {s} ({shard_folder(self.root, s)}): {_reason(failed[s])}" for s in shards)
        return ShardUnavailableError(
            f"{len(shards)} of {self.shards} shards did not answer — {named}. A dead shard actor is restarted "
            "from its folder: call again in a moment, or search with partial=True for the other shards' results, "
            "flagged partial", shards)

    def close(self) -> None:
        """Close every shard (a writer saves what it holds in memory), then end the actors."""
        refs = [a.close.remote() for row in self._actors for a in row]
        try:
            ray.get(refs, timeout=60)
        except (*_LOST, RayTaskError) as exc:
            log.warning("closing shards: %s", _reason(exc))
        for row in self._actors:
            for a in row:
                ray.kill(a, no_restart=True)


def _due(timeout: float | None) -> float | None:
    """When a call started now must have answered (None: no limit)."""
    return None if timeout is None else time.monotonic() + timeout


def _left(due: float | None) -> float | None:
    """Seconds left until `due` (None: no limit)."""
    return None if due is None else max(0.0, due - time.monotonic())


def _reason(exc: Exception) -> str:
    if isinstance(exc, ActorDiedError) and "creation task" in str(exc):  # its constructor raised: say what
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        return f"its actor failed to open the shard: {lines[-1]}"
    if isinstance(exc, ActorDiedError):
        return "its actor died"
    if isinstance(exc, ActorUnavailableError):
        return "its actor is unavailable (restarting)"
    if isinstance(exc, GetTimeoutError):
        return "it did not answer in time"
    return f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
