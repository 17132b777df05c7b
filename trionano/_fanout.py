"""Fan-out: a broadcast to many members proceeds bucket by bucket, in a task the server owns,
and never lets a member's later Pushes overtake it.

go-push keeps its sessions in buckets of 512 and goim in 32 buckets, so that a broadcast holds
one bucket's lock at a time. Trio has no locks, but queuing a Push to 50,000 members in one go
holds the event loop for tens of milliseconds (and wakes 50,000 writers into one scheduler
batch), so every other client's request waits behind it. Here a broadcast queues its first
:data:`BUCKET_SIZE` members in the caller (so that what the caller may see fail, a value too
large, fails there) and hands the rest to the server's :class:`FanOut`, which queues one bucket,
lets every other task run (``trio.lowlevel.checkpoint``), then the next.

Overload: the fan-out bounds what waits in it (``max_behind``: ``Config.max_fanout_backlog``,
:data:`MAX_BEHIND` by default). When broadcasts come faster than it reaches members, a broadcast
that would take its backlog past the bound is refused whole: no member gets it (not even the
caller's first bucket, so every member sees the same stream, with the same gaps), it is counted
as ``dropped_backlog`` (one per member it was for), logged (rate-limited) and the caller is told
(``broadcast`` returns 0 for it). For a live room a lost comment is better than every client's
requests waiting behind it: nothing is ever made in the caller past a bucket, and nothing stalls
the server for more than a step. A broadcast with nothing waiting is always taken (the bound
never refuses a group larger than itself outright); a member's own Push behind a broadcast is
refused the same way (``session.push`` returns False), its Kick and close never are.

Order: the fan-out runs what it is handed in order, and a member with a delivery still waiting
in it (:meth:`FanOut.behind`) gets its later Pushes, broadcasts, Kick or close through the
fan-out too, behind that delivery. So each member sees its Pushes in the order they were
issued, whether a broadcast yielded midway or not; members with nothing waiting get theirs at
once. Responses are not held behind a broadcast: a Response answers a request (pomelo's
clients hand it to the request's callback, not to the push routes) and waiting on a fan-out
would make every member's requests as slow as the largest broadcast.

Trains: broadcasts to the same members one after another (a game tick's updates to a room,
issued in one go) wait in the fan-out as jobs whose members are the same, in the same order.
Run one after another, a bucket per step, they would wake each member's writer once per
broadcast, and it would write each packet on its own (50 broadcasts to 1,000 members: 46,864
writes where one per member, the 50 packets joined, does: bench/runtime.py, B4). So the
fan-out runs consecutive jobs with the same members as a train: per step one range of
members, every job of the train delivered to them in the jobs' order, then the checkpoint;
each member has all of the train's packets queued before its writer runs, which joins them
into one write. A step costs about what a bucket's does: a delivery costs far less than
waking a writer and its write (:data:`WRITER_COST`), so the range narrows as the train grows
(:func:`train_width`: 64 members for one job, 48 for 4, 9 for 50), and a train holds at most
:data:`MAX_TRAIN` jobs. Whether a job's members are those of the job handed over before it is
decided when it is handed over, while that one waits: a comparison of the two lists,
reference by reference in C (0.1-0.2 ms at 50,000 members, in the caller, beside its own
snapshot of them; lists of other lengths differ at once). A train is made of the jobs waiting
when it starts; what comes meanwhile waits for the next one (a newcomer joining a train
under way would have to catch up first, and a steady stream of them would hold the train
back). Order is kept: every job of a train has the same members, each member gets the
train's deliveries in the order the jobs were handed over, and a job with other members (a
member's own Push, Kick or close handed over with :meth:`FanOut.after`, another group's
broadcast, the same group after a join or a leave) ends the train, so nothing is carried past
it. The members of a job are distinct (a group's are; a member listed twice would get a
train's deliveries in another order).

Garbage collection: each member a step visits wakes its writer (once, however many of a
train's packets it gets), which writes and waits again,
and a waiting writer holds 4 new objects the cyclic collector tracks (the wait's coroutine,
generator, trap and its ``__dict__``: see ``Agent._writer``) until its next packet. The old
ones die as the new ones are made, so CPython's allocation count, which starts its collections,
hardly moves: without help the youngest generation grows by every writer the broadcasts wake
until something else starts a collection, which then walks them all. And whatever a collection
finds alive (these, nearly all) moves on to the next generation, so a middle collection walks
what every young collection since the last one moved there: with CPython's cadence (a middle
collection every 11 young ones) and a young one every 1,024 members, 45,000-50,000 objects,
15-25 ms (at 9 objects per waiting writer, as in a channel's ``receive``: 111,000 objects,
45-60 ms), and those were the loaded probe's tail (bench/push.py, buckets: 50,000 members; 2
cores, load 0.4-1.6). So while the collector is enabled the fan-out collects the young and
middle generations together (``gc.collect(1)``) once it has visited :data:`SWEEP_EVERY` members
since its last collection: about 8,700 objects, a median 0.9-1.2 ms of CPU (1.9 ms over a 41 s
loaded phase) and at most 4.7-8.3 ms (the most is the collection that also walks a new
broadcast's list of members: 50,000 references). Smaller collections cost less per object (what
they walk is still in the CPU's caches): 28-34 ms of collector CPU per 50,000-member broadcast
against 230-310 ms with 9 objects per writer and CPython's cadence. Not after every bucket: a
room of 1,000 members with 100 broadcasts a second would pay 1,500 collections a second, most
of them walking objects that the next broadcast frees anyway.

Each of these middle collections counts towards a full one (``gc.get_count()[2]``), six times
as fast as CPython's cadence would for the same broadcasts; :func:`~trionano.tune_gc` raises
the full threshold six-fold (6,000) so that full collections (every object the sessions hold:
3.7 million at 50,000 members, 1.3-1.4 s, 2 s at load 4-5) come no sooner than they did.
CPython starts a full collection only from an automatic one (20,000 net allocations since the
last collection with ``tune_gc``), which the fan-out's own collections forestall while
broadcasts run: in loaded phases of 41 and 57 s none ran. ``gc.disable()`` turns the fan-out's
collections off with the collector.
"""

from __future__ import annotations

import collections
import gc
import itertools
from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol, TypeVar

import trio

from ._errors import MessageTooLarge
from ._log import RateLimitedLog
from ._stats import Counters
from ._util import passes_through

__all__ = [
    "BUCKET_SIZE",
    "MAX_BEHIND",
    "MAX_TRAIN",
    "SWEEP_EVERY",
    "WRITER_COST",
    "FanOut",
    "FanOutJob",
    "Member",
    "train_width",
]

#: Members queued between two checkpoints of a broadcast. go-push keeps 512 sessions per
#: bucket and goim shards into 32 buckets, to bound what one lock holds; in Trio what a step
#: holds is the loop, and each member queued also wakes its writer into the next scheduler
#: batch, so a step is kept small: on the 2-core machine of bench/push.py (50,000 members) a
#: scheduler batch took a median 0.7-0.9 ms with 64, 1.8-2.0 ms with 128 and ~15 ms with 512,
#: and an unrelated request crosses three or four batches. Not larger while the backlog is large
#: either: 256 members a step past half of ``max_behind`` made an overloaded server deliver 1.2x
#: as much a second (bench/push.py, overload: 25,000 against 20,100, medians of 3 runs of each,
#: interleaved, load 7.7-12.7) and gave the probe 1.8x the p99 (121 ms against 66), for the
#: same reason.
BUCKET_SIZE: Final = 64
#: What waking a member's writer for a step costs (its task's step, the join and the write),
#: counted in deliveries (a delivery queues a reference to the shared packet). About 13 over
#: streams that write to /dev/null, 5,000 members (medians of scheduler batches, load 3-7: one
#: job to 64 members 1.3-1.6 ms, 4 jobs to 32 members 0.6-0.8, 10 to 25 0.7-0.8, 50 to 5
#: 0.4-0.7); a socket's ``send`` costs more. 8: on the side of shorter steps. A step of a train
#: (see the module docstring) costs about what a bucket's does: :func:`train_width`.
WRITER_COST: Final = 8
#: Jobs a train holds at most: what waits behind them makes the next train.
MAX_TRAIN: Final = BUCKET_SIZE


def train_width(jobs: int) -> int:
    """Members a step of a train of ``jobs`` jobs visits: as many as cost about what a
    bucket's step does (``BUCKET_SIZE * (1 + WRITER_COST)`` deliveries' worth, each member
    ``jobs`` deliveries and a writer), at most :data:`BUCKET_SIZE`, at least 1. 64 for one
    job, 48 for 4, 32 for 10, 9 for 50, 8 for :data:`MAX_TRAIN`."""
    return max(1, min(BUCKET_SIZE, BUCKET_SIZE * (1 + WRITER_COST) // (jobs + WRITER_COST)))


#: Deliveries the fan-out may have waiting, by default (``Config.max_fanout_backlog``): a
#: broadcast that would take the backlog past it is refused whole (see the module docstring).
#: 20 broadcasts to 50,000 members, 1,000 to 1,000; what waits costs a reference per delivery
#: (in the broadcasts' snapshots of their members) and a count per member waited for.
MAX_BEHIND: Final = 1_000_000
#: Members the fan-out visits between two collections of its own (``gc.collect(1)``, see the
#: module's docstring): about 8,700 objects, a median 1 ms on bench/push.py's machine; every
#: 1,024 members with a middle collection every 4,096 took 3-5 ms at the median and up to 13.
SWEEP_EVERY: Final = 2_048


class Member(Protocol):
    """What the fan-out needs of a member (a :class:`~trionano.Session`): an id, for its log."""

    @property
    def id(self) -> int: ...


M = TypeVar("M", bound=Member)
Deliver = Callable[[Any], bool]  # called with the members it was handed with


class FanOutJob:
    """Deliveries handed to the fan-out: ``deliver(member)`` for each of ``members[start:]``
    in order (``count`` of them). ``queued`` counts those that queued a message; ``done`` is
    set when every member has been visited (or the server stopped). ``follows``: whether its
    members are those of the job handed over just before it, in the same order (it may run
    in a train with it: see the module docstring)."""

    __slots__ = ("count", "deliver", "done", "follows", "members", "next", "queued")

    def __init__(self, members: Sequence[Member], deliver: Deliver, start: int = 0, *, follows: bool = False) -> None:
        self.members: Final = members
        self.deliver: Final = deliver
        self.count: Final = len(members) - start
        self.next = start  # the index of the next member to visit
        self.queued = 0
        self.done: Final = trio.Event()
        self.follows: Final = follows


class FanOut:
    """One server's fan-out task and what it has been handed (see the module docstring). The
    server runs :meth:`run` in its nursery; groups hand work over with :meth:`send`, sessions
    with :meth:`after`. ``max_behind``: the bound on :attr:`waiting` (see :data:`MAX_BEHIND`);
    what would pass it is refused and counted as ``dropped_backlog``. Never raises for a member:
    a closed one is skipped (counted as ``dropped_closed``), an error in delivering is logged."""

    def __init__(self, counters: Counters, log: RateLimitedLog, *, max_behind: int = MAX_BEHIND) -> None:
        self._counters = counters
        self._max_behind = max_behind
        self._log = log
        self._jobs: collections.deque[FanOutJob] = collections.deque()
        self._behind = 0  # deliveries waiting in _jobs
        # per member, its deliveries waiting in _jobs: behind() in O(1), however many jobs wait
        # (a scan of every job per member made a lagging fan-out lag further)
        self._waiting: collections.Counter[Member] = collections.Counter()
        self._wake = trio.Event()
        self._running = False
        self._stopping = False
        self._unswept = 0  # members visited since the fan-out's last collection

    @property
    def waiting(self) -> int:
        """Deliveries handed over and not yet made."""
        return self._behind

    async def drained(self) -> None:
        """Wait until every delivery handed over so far has been made (or dropped by
        :meth:`stop`). What is handed over meanwhile is not waited for: under a steady push
        load the fan-out is never empty (a stopping server, which waits here, saw it take all
        the time it was given)."""
        if self._jobs:
            await self._jobs[-1].done.wait()  # the jobs are made in order

    def behind(self, session: Member) -> bool:
        """Whether ``session`` has a delivery waiting here: its next Push must come after it."""
        return session in self._waiting

    def send(self, members: Sequence[M], deliver: Callable[[M], bool]) -> tuple[int, FanOutJob | None]:
        """Deliver to ``members``, in order, after whatever each has waiting here: up to a
        bucket of those with nothing waiting at once (in the caller), the rest handed to the
        fan-out task. Returns how many the caller's part queued, and the job handed over
        (None when nothing was). When what it would hand over takes :attr:`waiting` past the
        bound while something is waiting, it delivers nothing (returns ``(0, None)``) and
        counts every member as ``dropped_backlog``. What ``deliver`` raises for the caller's
        part propagates. The fan-out keeps ``members`` itself (not a copy) until it has visited
        them: the caller must not change it (each copy of 50,000 members costs a millisecond or
        two: every reference taken touches the member's memory)."""
        if not self._running:  # no task to hand over to (not serving): everything now
            return sum(deliver(session) for session in members), None
        if not self._jobs and len(members) <= BUCKET_SIZE:
            return sum(deliver(session) for session in members), None  # the common case
        head = members[:BUCKET_SIZE]
        waiting = self._waiting
        if not waiting or not any(session in waiting for session in head):  # the common case
            if len(members) <= BUCKET_SIZE:
                return sum(deliver(session) for session in members), None
            if self._refused(len(members) - BUCKET_SIZE, len(members)):
                return 0, None
            queued = sum(deliver(session) for session in head)
            return queued, self._hand_over(members, deliver, BUCKET_SIZE)
        now: list[M] = []
        later: list[M] = []
        for session in head:
            (later if later or self.behind(session) else now).append(session)
        later.extend(members[BUCKET_SIZE:])
        if self._refused(len(later), len(members)):
            return 0, None
        queued = sum(deliver(session) for session in now)
        return queued, self._hand_over(later, deliver)

    def after(self, session: M, deliver: Callable[[M], bool], *, droppable: bool = True) -> bool:
        """Deliver to ``session`` after what it has waiting here (call when :meth:`behind`).
        Returns False, counting it as ``dropped_backlog``, when the backlog is at its bound and
        ``droppable`` (a Push; a Kick or a close is not, and is always handed over)."""
        if droppable and self._refused(1, 1):
            return False
        self._hand_over([session], deliver)
        return True

    def refuses(self, members: int) -> bool:
        """Whether :meth:`send` would refuse a broadcast to ``members`` members, whichever of
        them have deliveries waiting (it hands over all but a bucket at least); if so counts
        them as ``dropped_backlog`` and logs, as :meth:`send` would. For a caller to refuse a
        broadcast before it looks at the members (a snapshot of 50,000 costs a millisecond:
        an overloaded server's refusals must cost nothing)."""
        return self._running and self._refused(members - BUCKET_SIZE, members)

    def _refused(self, handed: int, members: int) -> bool:
        """Whether handing ``handed`` deliveries over would take the backlog past its bound
        (never when nothing waits); if so counts the ``members`` refused and logs."""
        behind = self._behind
        if not behind or behind + handed <= self._max_behind:
            return False
        self._counters.dropped_backlog += members
        self._log.warning(
            "fan-out backlog",
            "fan-out: %d deliveries waiting (bound %d): a Push to %d members refused",
            behind,
            self._max_behind,
            members,
        )
        return True

    def _hand_over(self, members: Sequence[Member], deliver: Deliver, start: int = 0) -> FanOutJob:
        jobs = self._jobs
        # the same members as the job before it (a train): compared while that one waits, in C
        # (identity first per element; a different length answers at once)
        follows = bool(jobs) and (jobs[-1].members is members or jobs[-1].members == members)
        job = FanOutJob(members, deliver, start, follows=follows)
        jobs.append(job)
        self._behind += job.count
        self._waiting.update(itertools.islice(members, start, None) if start else members)  # counted in C
        self._wake.set()
        return job

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Make the deliveries handed over, in order, a bucket (or a train's range of members)
        per step, until :meth:`stop` (what is still waiting then is dropped). The server's
        nursery owns this task."""
        self._running = True
        task_status.started()
        try:
            while not self._stopping:
                if not self._jobs:
                    self._wake = trio.Event()
                    await self._wake.wait()
                    continue
                train = self._train()
                end = len(train[0].members)  # every job of a train reaches it in the same step
                width = train_width(len(train))
                while min(job.next for job in train) < end:
                    self._unswept += self._step(train, width)
                    await trio.lowlevel.checkpoint()
                    if self._unswept >= SWEEP_EVERY and gc.isenabled():  # what the writers left (see above)
                        self._unswept = 0
                        gc.collect(1)
                for job in train:
                    self._finish(job)
        finally:
            self._running = False
            while self._jobs:
                job = self._jobs[0]
                self._counters.dropped_closed += len(job.members) - job.next
                self._behind -= len(job.members) - job.next
                job.next = len(job.members)
                self._finish(job)
            self._waiting.clear()

    def stop(self) -> None:
        """End :meth:`run` (the server is stopping). Idempotent."""
        self._stopping = True
        self._wake.set()

    def _train(self) -> list[FanOutJob]:
        """The first job waiting and those right behind it with the same members (at most
        :data:`MAX_TRAIN` jobs in all)."""
        train = [self._jobs[0]]
        for job in itertools.islice(self._jobs, 1, MAX_TRAIN):
            if not job.follows:
                break
            train.append(job)
        return train

    def _step(self, train: list[FanOutJob], width: int) -> int:
        """Visit the next ``width`` members of ``train`` (jobs with the same members): each job
        in turn delivers to those of them it has not reached yet. Returns how many members it
        visited."""
        start = min(job.next for job in train)
        end = min(start + width, len(train[0].members))
        for job in train:
            if job.next < end:
                self._deliver(job, job.next, end)
        return end - start

    def _deliver(self, job: FanOutJob, start: int, end: int) -> None:
        """``job``'s deliveries to its members ``start`` to ``end`` (its next ones)."""
        job.next = end
        self._behind -= end - start
        waiting = self._waiting
        deliver = job.deliver
        for session in job.members[start:end]:
            left = waiting[session] - 1
            if left:
                waiting[session] = left
            else:
                del waiting[session]
            try:
                job.queued += deliver(session)
            except trio.BrokenResourceError:
                self._counters.dropped_closed += 1
            except MessageTooLarge as exc:
                self._log.warning("fan-out", "fan-out: a Push for session %d is too large: %s", session.id, exc)
            except BaseException as exc:  # a user's serializer or pipeline: this member only
                if passes_through(exc):
                    raise
                self._log.exception("fan-out", "fan-out: delivering to session %d failed", session.id, exc_info=exc)

    def _finish(self, job: FanOutJob) -> None:
        if self._jobs and self._jobs[0] is job:
            self._jobs.popleft()
        job.done.set()
