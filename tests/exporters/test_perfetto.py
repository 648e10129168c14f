"""Tests for the Perfetto / chrome://tracing exporter: tracks per thread, hop slices, flow arrows."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from sample_traces import SLOW_S, concurrent_trace, hop_trace, queued_trace

from tracebridge import semconv
from tracebridge.exporters import PerfettoExporter, TraceFileError, read_trace_file, specs
from tracebridge.exporters.perfetto import encode

EPSILON_US = 0.002  # timestamps are written to the nanosecond (3 decimals of a microsecond)


class Timeline:
    """A parsed trace-event document, indexed the way Perfetto reads it."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        events = document["traceEvents"]
        self.thread_names = {e["tid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
        self.slices = [e for e in events if e["ph"] == "X"]
        self.flows: dict[int, dict[str, dict[str, Any]]] = defaultdict(dict)
        for event in events:
            if event["ph"] in ("s", "f"):
                assert event["ph"] not in self.flows[event["id"]], "two ends of the same kind"
                self.flows[event["id"]][event["ph"]] = event

    def track(self, tid: int) -> str:
        return self.thread_names[tid]

    def by_span(self, span: ReadableSpan) -> list[dict[str, Any]]:
        span_id = f"{span.context.span_id:016x}"
        return [event for event in self.slices if event["args"].get("span_id") == span_id]

    def innermost(self, event: dict[str, Any]) -> dict[str, Any]:
        """The deepest slice on the event's track containing its timestamp: what a flow end binds to."""
        return min(self.enclosing(event), key=lambda piece: piece["dur"])

    def enclosing(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        """The slices on the event's track that contain its timestamp, outermost first."""
        return [
            piece for piece in self.slices
            if piece["tid"] == event["tid"] and piece["ts"] - EPSILON_US <= event["ts"] <= piece["ts"] + piece["dur"] + EPSILON_US
        ]


def timeline(spans: list[ReadableSpan]) -> Timeline:
    document = json.loads(json.dumps(encode(spans), allow_nan=False))
    return Timeline(document)


def assert_well_formed(line: Timeline) -> None:
    """Every track's slices nest (Chrome's rule) and every arrow starts and ends inside a slice."""
    by_track: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for piece in line.slices:
        assert piece["dur"] >= 0
        assert piece["tid"] in line.thread_names, "a slice on an unnamed track"
        by_track[piece["tid"]].append(piece)
    for pieces in by_track.values():
        stack: list[float] = []
        for piece in sorted(pieces, key=lambda p: (p["ts"], -p["dur"])):
            end = piece["ts"] + piece["dur"]
            while stack and stack[-1] <= piece["ts"] + EPSILON_US:
                stack.pop()
            assert not stack or end <= stack[-1] + EPSILON_US, f"slice {piece['name']} overlaps without nesting"
            stack.append(end)
    for ends in line.flows.values():
        assert set(ends) == {"s", "f"}
        assert ends["f"]["bp"] == "e"
        for event in ends.values():
            assert line.enclosing(event), f"flow {event['name']} at {event['ts']} binds to no slice"


def sample(spans: object, scenario: Any = hop_trace) -> list[ReadableSpan]:
    return scenario(spans.provider, spans.finished)  # type: ignore[attr-defined]


def test_perfetto_hops_have_caller_and_runner_slices_joined_by_arrows(spans: object) -> None:
    """Tests that each hop is a slice on the caller's track, a run slice on the runner's, and two arrows."""
    originals = sample(spans)
    line = timeline(originals)
    assert_well_formed(line)
    hops = [span for span in originals if span.name in (semconv.SYNC_TO_ASYNC, semconv.ASYNC_TO_SYNC)]
    assert len(hops) == 3
    origin = line.document["otherData"]["time_origin_unix_ns"]
    for hop in hops:
        attributes = hop.attributes or {}
        caller_name = attributes[semconv.CALLER_THREAD_NAME]
        runner_name = attributes[semconv.THREAD_NAME]
        function = str(attributes[semconv.CODE_FUNCTION_NAME]).rsplit(".", 1)[-1]
        kind = hop.name.removeprefix("tracebridge.")
        pieces = {(line.track(piece["tid"]), piece["name"]): piece for piece in line.by_span(hop)}
        call = pieces[(caller_name, f"{kind} {function}")]
        run = pieces[(runner_name, function)]
        assert call["ts"] == pytest.approx((hop.start_time - origin) / 1000, abs=EPSILON_US)
        assert call["dur"] == pytest.approx((hop.end_time - hop.start_time) / 1000, abs=EPSILON_US)
        wait_us = attributes[semconv.QUEUE_WAIT_MS] * 1000
        assert run["ts"] == pytest.approx(call["ts"] + wait_us, abs=EPSILON_US)
        assert run["args"]["ran"] == f"{kind} from {caller_name}"
        queued = pieces[(caller_name, "queued")]
        assert queued["dur"] == pytest.approx(wait_us, abs=EPSILON_US)
        # Arrows: submit (caller -> runner at the run's start) and return (runner -> caller at the end).
        span_id = f"{hop.context.span_id:016x}"
        arrows = {
            ends["s"]["name"]: ends for ends in line.flows.values()
            if line.innermost(ends["s"])["args"]["span_id"] == line.innermost(ends["f"])["args"]["span_id"] == span_id
        }
        assert set(arrows) == {"submit", "return"}
        assert line.track(arrows["submit"]["s"]["tid"]) == caller_name
        assert line.track(arrows["submit"]["f"]["tid"]) == runner_name
        assert arrows["submit"]["f"]["ts"] == pytest.approx(run["ts"], abs=EPSILON_US)
        assert line.track(arrows["return"]["s"]["tid"]) == runner_name
        assert line.track(arrows["return"]["f"]["tid"]) == caller_name
    assert len(line.flows) == 6  # two per hop; the handoff under a hop adds none
    error_hop = next(hop for hop in hops if hop.status.status_code.name == "ERROR")
    assert {piece["cname"] for piece in line.by_span(error_hop) if piece["name"] != "queued"} == {"terrible"}


def test_perfetto_tracks_are_named_after_threads(spans: object) -> None:
    """Tests that there is one named track per thread seen, and the process is named after the service."""
    originals = sample(spans)
    line = timeline(originals)
    threads = set()
    for span in originals:
        attributes = span.attributes or {}
        for key in (semconv.THREAD_NAME, semconv.CALLER_THREAD_NAME, semconv.QUEUED_THREAD_NAME):
            if key in attributes:
                threads.add(attributes[key])
    assert sorted(line.thread_names.values()) == sorted(threads)
    (process,) = [e for e in line.document["traceEvents"] if e["ph"] == "M" and e["name"] == "process_name"]
    assert process["args"]["name"] == spans.provider.resource.attributes["service.name"]  # type: ignore[attr-defined]


def test_perfetto_other_spans_go_on_the_thread_that_ran_them(spans: object) -> None:
    """Tests that Local, handoff and user spans sit on their thread: attribute, else parent's callee thread."""
    originals = sample(spans)
    line = timeline(originals)
    named = {span.name: span for span in originals}
    local = named[semconv.LOCAL_ACCESS]
    (piece,) = line.by_span(local)
    assert line.track(piece["tid"]) == local.attributes[semconv.THREAD_NAME]
    assert piece["name"] == "local set user"
    assert piece["args"][semconv.LOCAL_ATTRIBUTE] == "user"
    hop = next(span for span in originals if span.name == semconv.SYNC_TO_ASYNC and span.status.status_code.name != "ERROR")
    (user,) = line.by_span(named["SELECT users"])
    assert line.track(user["tid"]) == hop.attributes[semconv.THREAD_NAME]
    (handoff,) = line.by_span(named[semconv.HANDOFF])
    assert handoff["name"] == "handoff _lookup"
    assert line.track(handoff["tid"]) == named[semconv.HANDOFF].attributes[semconv.THREAD_NAME]
    (root,) = line.by_span(named["request"])
    assert line.track(root["tid"]) == named[semconv.ASYNC_TO_SYNC].attributes[semconv.CALLER_THREAD_NAME]


def test_perfetto_long_queue_wait_is_a_long_highlighted_slice(spans: object) -> None:
    """Tests that a call stuck behind another on the thread-sensitive thread shows a long, tinted 'queued' slice."""
    originals = sample(spans, queued_trace)
    line = timeline(originals)
    assert_well_formed(line)
    queued = [piece for piece in line.slices if piece["name"] == "queued"]
    longest = max(queued, key=lambda piece: piece["dur"])
    assert longest["dur"] >= SLOW_S * 1e6 * 0.8
    assert longest["cname"] == "bad"
    assert longest["args"]["waiting_for"].startswith("tracebridge-")


def test_perfetto_interleaved_requests_get_an_overlap_track(spans: object) -> None:
    """Tests that two requests interleaved on one loop thread stay well formed, the second on an extra track."""
    originals = sample(spans, concurrent_trace)
    line = timeline(originals)
    assert_well_formed(line)
    roots = {span.name: span for span in originals if span.parent is None}
    first, second = (line.by_span(roots[name])[0] for name in ("first", "second"))
    assert line.track(first["tid"]) == "MainThread"
    assert line.track(second["tid"]) == "MainThread (overlapping 1)"


def test_perfetto_exporter_writes_atomically_at_flush(spans: object, tmp_path: Path) -> None:
    """Tests that the exporter writes the whole document at flush and again, complete, at shutdown."""
    originals = sample(spans)
    path = tmp_path / "trace.perfetto.json"
    exporter = PerfettoExporter(path)
    exporter.export(originals[:3])
    assert not path.exists()
    exporter.force_flush()
    assert len(timeline_from(path).by_span(originals[0])) >= 1
    exporter.export(originals[3:])
    exporter.shutdown()
    line = timeline_from(path)
    assert_well_formed(line)
    assert {piece["args"]["span_id"] for piece in line.slices} == {f"{s.context.span_id:016x}" for s in originals}
    assert exporter.counters.exported == 7


def timeline_from(path: Path) -> Timeline:
    return Timeline(json.loads(path.read_text()))


def test_perfetto_refuses_to_overwrite_a_foreign_file(tmp_path: Path) -> None:
    """Tests that the perfetto spec will not replace a file that is not a trace-event document."""
    path = tmp_path / "index.html"
    path.write_text("<html></html>")
    with pytest.raises(ValueError, match="refusing to overwrite .*index.html: it is not a Perfetto"):
        specs.build([f"perfetto={path}"])
    assert path.read_text() == "<html></html>"


def test_perfetto_file_cannot_be_read_back(spans: object, tmp_path: Path) -> None:
    """Tests that reading a Perfetto file as a trace says why not and what to use instead."""
    path = tmp_path / "trace.perfetto.json"
    exporter = PerfettoExporter(path)
    exporter.export(sample(spans))
    exporter.shutdown()
    with pytest.raises(TraceFileError, match="a Perfetto timeline cannot be read back"):
        read_trace_file(path)


def test_perfetto_no_spans_writes_no_file(tmp_path: Path) -> None:
    """Tests that with nothing traced (tracing off) no file is written."""
    exporter = PerfettoExporter(tmp_path / "t.json")
    exporter.shutdown()
    assert not (tmp_path / "t.json").exists()
    assert encode([])["traceEvents"] == []
