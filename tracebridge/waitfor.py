"""The wait-for graph of a :class:`~tracebridge.flow.FlowSnapshot`, and its cycles.

Nodes are threads, asyncio tasks and hops (bridge calls in flight).  An edge
``a -> b`` means *a cannot move until b does*:

* task → ``sync_to_async`` hop: the task awaits the call;
* queued ``sync_to_async`` hop → thread: the hop waits in a one-thread queue
  (a CurrentThreadExecutor or a one-worker pool) whose thread is busy with
  something else — for a CurrentThreadExecutor, "busy" means its thread is not
  the one serving it right now (it is running other sync code, or it is blocked
  in a *newer* ``async_to_sync`` serving a newer executor);
* running ``sync_to_async`` hop → the thread running it;
* thread → ``async_to_sync`` hop: the thread's innermost bridge frame is that
  call (it is blocked in it);
* ``async_to_sync`` hop → task: the coroutine runs as that task (or → the
  loop's thread when it has not started and that loop is blocked);
* task → task: the task is suspended on the other (``await``, ``gather``);
* task → thread: the task's loop is blocked in sync code on that thread.

A thread running sync code (its innermost frame is a ``sync_to_async`` callee)
has no outgoing edge: what it waits on (a lock, an Event, I/O) is invisible,
which is why a chain that ends there is a *stall*, not a *deadlock*.  A cycle
is a deadlock: every participant waits on the next, none can move.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from .flow import (
    BLOCKED_ASYNC_TO_SYNC,
    KIND_CURRENT_THREAD,
    KIND_SINGLE_THREAD,
    QUEUED,
    RETURNING,
    RUNNING,
    FlowSnapshot,
    HopInfo,
)

__all__ = ["Edge", "WaitForGraph", "build", "hop_node", "task_node", "thread_node"]

# Edge kinds (Edge.why).
AWAITS_HOP = "awaits_hop"
QUEUED_BEHIND = "queued_behind"
RUNS_ON = "runs_on"
BLOCKED_IN = "blocked_in"
RUNS_AS = "runs_as"
LOOP_STUCK = "loop_stuck"
AWAITS_TASK = "awaits_task"


def thread_node(ident: int) -> str:
    return f"thread:{ident}"


def task_node(key: int) -> str:
    return f"task:{key}"


def hop_node(key: int) -> str:
    return f"hop:{key}"


def node_kind(node: str) -> str:
    """``thread``, ``task`` or ``hop``."""
    return node.split(":", 1)[0]


def node_key(node: str) -> int:
    return int(node.split(":", 1)[1])


@dataclass(frozen=True, slots=True)
class Edge:
    """``source`` cannot move until ``target`` does; ``why`` is one of the edge kinds above."""

    source: str
    target: str
    why: str


@dataclass
class WaitForGraph:
    """Edges by source node (at most a few per node)."""

    edges: dict[str, list[Edge]] = field(default_factory=dict)

    def add(self, source: str, target: str, why: str) -> None:
        self.edges.setdefault(source, []).append(Edge(source, target, why))

    def out(self, node: str) -> list[Edge]:
        return self.edges.get(node, [])

    def all_edges(self) -> Iterator[Edge]:
        for edges in self.edges.values():
            yield from edges

    def cycles(self) -> list[list[Edge]]:
        """One simple cycle per strongly connected component that has one, each starting at a thread if it can."""
        found = []
        for component in self._components():
            cycle = self._cycle_in(component)
            if cycle:
                found.append(cycle)
        return found

    def chain(self, start: str, limit: int = 32) -> list[Edge]:
        """The edges followed from ``start`` (first edge each time) until a sink or a node seen before."""
        seen = {start}
        path: list[Edge] = []
        node = start
        while len(path) < limit:
            edges = self.out(node)
            if not edges:
                break
            edge = edges[0]
            path.append(edge)
            if edge.target in seen:
                break
            seen.add(edge.target)
            node = edge.target
        return path

    def _components(self) -> list[set[str]]:
        # Tarjan's algorithm, iterative (graphs are small, but recursion limits are not ours to spend).
        index: dict[str, int] = {}
        low: dict[str, int] = {}
        on_stack: set[str] = set()
        stack: list[str] = []
        components: list[set[str]] = []
        counter = 0
        nodes = set(self.edges)
        for edges in self.edges.values():
            nodes.update(edge.target for edge in edges)
        for root in sorted(nodes):
            if root in index:
                continue
            work: list[tuple[str, int]] = [(root, 0)]
            while work:
                node, position = work.pop()
                if position == 0:
                    index[node] = low[node] = counter
                    counter += 1
                    stack.append(node)
                    on_stack.add(node)
                edges = self.out(node)
                if position < len(edges):
                    work.append((node, position + 1))
                    target = edges[position].target
                    if target not in index:
                        work.append((target, 0))
                    elif target in on_stack:
                        low[node] = min(low[node], index[target])
                    continue
                for edge in edges:
                    if edge.target in on_stack:
                        low[node] = min(low[node], low[edge.target])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    self_loop = any(edge.target == node for edge in edges)
                    if len(component) > 1 or self_loop:
                        components.append(component)
        return components

    def _cycle_in(self, component: set[str]) -> list[Edge]:
        starts = sorted(component, key=lambda node: (node_kind(node) != "thread", node))
        start = starts[0]
        # Depth-first search for a path back to start inside the component.
        path: list[Edge] = []
        seen: set[str] = set()

        def search(node: str) -> bool:
            seen.add(node)
            for edge in self.out(node):
                if edge.target not in component:
                    continue
                path.append(edge)
                if edge.target == start:
                    return True
                if edge.target not in seen and search(edge.target):
                    return True
                path.pop()
            return False

        return list(path) if search(start) else []


def build(snapshot: FlowSnapshot) -> WaitForGraph:
    """The wait-for graph of ``snapshot`` (see the module docstring for the edges)."""
    graph = WaitForGraph()
    hops = {hop.key: hop for hop in snapshot.hops}
    threads = {thread.ident: thread for thread in snapshot.threads}
    tasks = {task.key: task for task in snapshot.tasks}
    executors = {executor.key: executor for executor in snapshot.executors}
    blocked_loops = {loop.key: loop for loop in snapshot.loops if loop.blocked}

    def innermost(ident: int) -> HopInfo | None:
        thread = threads.get(ident)
        if thread is None or not thread.frames:
            return None
        return hops.get(thread.frames[-1])

    def live_task(key: int | None) -> bool:
        task = tasks.get(key) if key is not None else None
        return task is not None and not task.done

    for hop in snapshot.hops:
        node = hop_node(hop.key)
        if hop.is_sync_to_async:
            if hop.state == RETURNING:
                continue
            if live_task(hop.caller_task):
                graph.add(task_node(hop.caller_task), node, AWAITS_HOP)  # type: ignore[arg-type]
            if hop.state == RUNNING and hop.thread is not None:
                graph.add(node, thread_node(hop.thread.ident), RUNS_ON)
            elif hop.state == QUEUED:
                executor = executors.get(hop.executor) if hop.executor is not None else None
                if executor is None or executor.kind not in (KIND_CURRENT_THREAD, KIND_SINGLE_THREAD):
                    continue  # a multi-worker pool: no single thread to wait on (stalls catch it)
                if not executor.threads:
                    continue
                worker = executor.threads[0].ident
                inner = innermost(worker)
                if inner is None:
                    continue  # the thread is free: it will pick the hop up
                if executor.kind == KIND_CURRENT_THREAD and not inner.is_sync_to_async and inner.executor == executor.key:
                    continue  # its thread is waiting in async_to_sync serving exactly this queue
                graph.add(node, thread_node(worker), QUEUED_BEHIND)
        else:
            if hop.end_ns:
                continue  # the coroutine is done; the caller is about to resume
            inner = innermost(hop.caller.ident)
            if inner is not None and inner.key == hop.key:
                graph.add(thread_node(hop.caller.ident), node, BLOCKED_IN)
            if live_task(hop.callee_task):
                graph.add(node, task_node(hop.callee_task), RUNS_AS)  # type: ignore[arg-type]
            elif hop.state == QUEUED and hop.loop in blocked_loops:
                graph.add(node, thread_node(blocked_loops[hop.loop].thread.ident), LOOP_STUCK)

    for task in snapshot.tasks:
        if task.done:
            continue
        for awaited in task.awaits:
            if live_task(awaited):
                graph.add(task_node(task.key), task_node(awaited), AWAITS_TASK)
        loop = blocked_loops.get(task.loop) if task.loop is not None else None
        if loop is not None:
            thread = threads.get(loop.thread.ident)
            if thread is None or thread.state != BLOCKED_ASYNC_TO_SYNC:
                graph.add(task_node(task.key), thread_node(loop.thread.ident), LOOP_STUCK)
    return graph
