"""The `fluxgate-async` command line, through its entry point, with its real output."""

from __future__ import annotations

import csv
import io
import json
import random
import re
import shutil
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from fluxgate_async import FluxGate
from fluxgate_async.cli import main
from fluxgate_async.cli._demo import DEMO_STEPS, StepOutcome, run_demo
from fluxgate_async.cli._report import print_report
from fluxgate_async.cli._serve import exposure_warning

from .conftest import CollectorProcess, free_port, run_cli

SEND_FLAGS = ["--input-tokens", "100", "--output-tokens", "50", "--model", "gpt-4o"]


def test_send_one_event_from_flags(collector_process: CollectorProcess) -> None:
    """`send` with flags records one event and prints the answer as JSON."""
    result = run_cli(
        "send",
        "--endpoint",
        collector_process.url,
        *SEND_FLAGS,
        "--provider",
        "openai",
        "--feature",
        "chat",
        "--user",
        "user-1",
        "--cached-tokens",
        "20",
        "--latency-ms",
        "812.5",
        "--streamed",
        "--session-id",
        "s1",
        "--conversation-id",
        "c1",
        "--step",
        "draft",
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["pricing"] == "SUCCESS"
    assert answer["cost"] > 0
    stored = collector_process.get("/api/events")["events"][0]["event"]
    assert stored["usage"]["isStreamed"] is True
    assert stored["metadata"] == {
        "feature": "chat",
        "step": "draft",
        "user": "user-1",
        "sessionId": "s1",
        "conversationId": "c1",
    }


@pytest.mark.parametrize(
    ("flags", "status"),
    [
        (["--status", "MAX_TOKENS"], "MAX_TOKENS"),
        (["--error-message", "boom"], {"status": "ERROR", "errorMessage": "boom"}),
        (
            ["--status", "BLOCKED", "--error-message", "refused"],
            {"status": "BLOCKED", "errorMessage": "refused"},
        ),
    ],
)
def test_send_status_flags(
    collector_process: CollectorProcess,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    status: object,
) -> None:
    """--status and --error-message set the event's outcome."""
    assert main(["send", "--endpoint", collector_process.url, *SEND_FLAGS, *flags]) == 0
    assert json.loads(capsys.readouterr().out)["id"].startswith("evt_")
    assert collector_process.get("/api/events")["events"][0]["event"]["status"] == status


def test_send_jsonl_file_reports_each_failure(
    collector_process: CollectorProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each good line is recorded and printed; each bad one is listed with its line and reason."""
    events = tmp_path / "events.jsonl"
    good = json.dumps({"usage": {"inputTokens": 10, "outputTokens": 5, "model": "gpt-4o"}})
    events.write_text(
        "\n".join([good, "{not json", "", good, '{"usage": {"inputTokens": "ten"}}', good]) + "\n"
    )
    code = main(
        ["send", "--endpoint", collector_process.url, "--file", str(events), "--concurrency", "2"]
    )
    out, err = capsys.readouterr()
    assert code == 1
    lines = sorted(json.loads(line)["line"] for line in out.splitlines())
    assert lines == [1, 4, 6]
    assert "sent 5 events: 3 recorded, 2 failed" in err
    assert "line 2: not JSON" in err
    assert "line 5: invalid event: usage" in err
    assert len(collector_process.get("/api/events")["events"]) == 3


def test_send_from_stdin(collector_process: CollectorProcess) -> None:
    """`--file -` reads JSON lines from stdin."""
    good = json.dumps({"usage": {"inputTokens": 10, "outputTokens": 5}})
    result = run_cli(
        "send", "--endpoint", collector_process.url, "--file", "-", stdin=f"{good}\n{good}\n"
    )
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 2
    assert "sent 2 events: 2 recorded, 0 failed" in result.stderr


def test_send_to_nothing_says_why(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """When nothing listens, each failure gives the client's reason; exit status 1."""
    endpoint = f"http://127.0.0.1:{free_port()}/api/events"
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps({"usage": {"inputTokens": 1, "outputTokens": 1}}) + "\n")
    base = ["send", "--endpoint", endpoint, "--timeout", "2"]
    assert main([*base, "--file", str(events)]) == 1
    err = capsys.readouterr().err
    assert f"line 1: nothing answers at {endpoint}: start a collector with" in err
    assert "sent 1 event: 0 recorded, 1 failed" in err
    assert main([*base, *SEND_FLAGS]) == 1
    assert capsys.readouterr().err == (
        f"fluxgate-async send: error: event not recorded: nothing answers at {endpoint}: "
        "start a collector with `fluxgate-async serve`, or give --endpoint\n"
    )


def test_send_to_a_wrong_path_hints_at_the_events_endpoint(
    collector_process: CollectorProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 404 says where the events endpoint is."""
    endpoint = f"{collector_process.base_url}/events"
    assert main(["send", "--endpoint", endpoint, "--api-key", "k", *SEND_FLAGS]) == 1
    err = capsys.readouterr().err
    assert f"{endpoint} answered 404 Not Found: the events endpoint ends in /api/events" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give one event with --input-tokens"),
        (["--file", "x.jsonl", *SEND_FLAGS], "give one event with --input-tokens"),
        (["--file", "/no/such/file.jsonl"], "cannot read /no/such/file.jsonl: No such file"),
        (["--input-tokens", "-5", "--output-tokens", "1"], "invalid event: usage"),
        (["--timeout", "0", *SEND_FLAGS], "timeout must be a positive number"),
    ],
)
def test_send_mistakes_are_one_line(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    """User mistakes give exit status 1 and one line on stderr, no traceback."""
    assert main(["send", "--endpoint", "http://127.0.0.1:9/api/events", *args]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert message in err


def test_send_lists_twenty_failures_then_counts_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file of many bad lines lists the first twenty and counts the others."""
    events = tmp_path / "events.jsonl"
    events.write_text("nope\n" * 25)
    assert main(["send", "--endpoint", "http://127.0.0.1:9/x", "--file", str(events)]) == 1
    err = capsys.readouterr().err
    assert "sent 25 events: 0 recorded, 25 failed" in err
    assert "line 20: not JSON" in err
    assert "line 21:" not in err
    assert "... and 5 more" in err


def test_interrupt_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C during a command exits 130 with one line, no traceback."""

    def interrupted(**_: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr("fluxgate_async.cli._main.run_report", interrupted)
    assert main(["report"]) == 130
    assert capsys.readouterr().err == "fluxgate-async report: interrupted\n"


async def test_demo_reports_lost_events(capsys: pytest.CaptureFixture[str]) -> None:
    """A demo step that loses an event makes the demo exit 1 and say so."""

    async def lost_step(fg: FluxGate, rng: random.Random) -> StepOutcome:
        answer = await fg.record_event({"usage": {"inputTokens": -1, "outputTokens": 0}})
        return StepOutcome("broken step", lost=int(answer is None))

    assert await run_demo((lost_step, *DEMO_STEPS[1:])) == 1
    out, err = capsys.readouterr()
    assert "broken step" in out
    assert "1 event(s) were not recorded" in err


def test_send_non_utf8_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A file that is not UTF-8 text is one clear error."""
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\xff\xfe\x00garbage\n")
    assert main(["send", "--endpoint", "http://127.0.0.1:9/x", "--file", str(events)]) == 1
    assert "not UTF-8 text" in capsys.readouterr().err


@pytest.fixture
def filled_db(served: CollectorProcess) -> str:
    """Each backend's database after three events: two features, one unknown model."""
    for feature, model in [("chat", "gpt-4o"), ("chat", "gpt-4o"), ("search", "acme-7b")]:
        code = main(
            [
                "send",
                "--endpoint",
                served.url,
                *SEND_FLAGS[:4],
                "--model",
                model,
                "--feature",
                feature,
            ]
        )
        assert code == 0
    return str(served.db)


def test_report_table(filled_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The default report is a table by model with a total row."""
    capsys.readouterr()
    assert main(["report", "--db", str(filled_db)]) == 0
    out = capsys.readouterr().out
    assert "LLM usage by model" in out
    assert "gpt-4o" in out
    assert "acme-7b" in out
    assert "$0.001500" in out  # 2 x (100 x $2.5 + 50 x $10) per million
    assert "total" in out


def test_report_json_and_csv(filled_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    """JSON and CSV carry the same numbers, grouped as asked."""
    capsys.readouterr()
    assert main(["report", "--db", str(filled_db), "--by", "feature", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["groupBy"] == "feature"
    assert [(r["feature"], r["calls"], r["tokens"]) for r in report["rows"]] == [
        ("chat", 2, 300),
        ("search", 1, 150),
    ]
    assert main(["report", "--db", str(filled_db), "--by", "feature", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["feature"], r["calls"], r["unpriced"]) for r in rows] == [
        ("chat", "2", "0"),
        ("search", "1", "1"),
    ]
    assert main(["report", "--db", str(filled_db), "--since", "2999-01-01"]) == 0
    assert "no events recorded yet" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--db", "/no/such.sqlite"],
            "no collector database at '/no/such.sqlite': pass --db with the file a collector "
            "writes to, or start one that writes there with "
            "`fluxgate-async serve --db /no/such.sqlite`",
        ),
        (["--since", "last week"], "since must be an ISO 8601"),
        (["--since", "0001-01-01T00:00:00+01:00"], "--since is out of range once in UTC"),
    ],
)
def test_report_mistakes_are_one_line(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    """A missing database or a bad --since is one line and exit status 1."""
    assert main(["report", *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("fluxgate-async report: error: ")
    assert message in err


def test_report_on_a_foreign_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A file that is not a collector database is one clear error."""
    other = tmp_path / "notes.txt"
    other.write_text("hello, this is not SQLite\n" * 100)
    assert main(["report", "--db", str(other)]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_missing_extra_is_one_line(
    filled_db: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without `rich`, the table report says which extra to install."""
    monkeypatch.setitem(sys.modules, "rich.table", None)
    assert main(["report", "--db", str(filled_db)]) == 1
    err = capsys.readouterr().err
    assert "needs the 'rich' package: pip install 'fluxgate-async[collector]'" in err


def test_demo_runs_the_whole_loop() -> None:
    """`demo` records the workload through a real collector and prints the report."""
    result = run_cli("demo")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "awaited calls:    40/40 recorded" in out
    assert "background calls: 60/60 queued, 60 delivered in the background, 0 failed" in out
    assert re.search(r"streamed call:    40 chunks in [\d.]+ ms, cost \$0\.\d+", out)
    assert re.search(r"unknown model:    recorded as evt_\w+, cost n/a \(no price", out)
    assert re.search(r"failed call:      recorded as evt_\w+, status ERROR, cost \$0\.\d+", out)
    assert "collector stopped; database closed" in out
    assert "LLM usage by model" in out
    assert "claude-sonnet-4-5" in out
    assert "LLM usage by feature" in out
    assert result.stderr == ""
    kept = re.search(r"The events are kept in (\S+)\. Next:", out)
    assert kept is not None
    report = run_cli("report", "--db", kept[1], "--by", "user", "--format", "json")
    assert report.returncode == 0, report.stderr
    assert {row["user"] for row in json.loads(report.stdout)["rows"]} >= {"user-ada"}
    next_steps = out.split("Next:\n", 1)[1]
    assert [line[:5] for line in next_steps.splitlines() if line[2:3].isdigit()] == [
        "  1. ",
        "  2. ",
        "  3. ",
    ]
    shutil.rmtree(Path(kept[1]).parent)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["serve", "--port", "http"], "argument --port: must be a port number"),
        (["send", "--concurrency", "0"], "argument --concurrency: must be a positive integer"),
        (["send", "--concurrency", "x"], "argument --concurrency: must be a positive integer"),
        (["report", "--by", "colour"], "argument --by: invalid choice"),
        (["launch"], "invalid choice: 'launch'"),
    ],
)
def test_bad_flags_exit_2_with_one_line(args: list[str], message: str) -> None:
    """A usage mistake is exit status 2 and one line naming it, no traceback."""
    result = run_cli(*args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert message in result.stderr
    assert "(see --help)" in result.stderr


@pytest.mark.parametrize(
    ("host", "keys", "warns"),
    [
        ("0.0.0.0", [], True),
        ("::", [], True),
        ("0.0.0.0", ["k"], False),
        ("localhost", [], False),
        ("[::1]", [], False),
    ],
)
def test_serving_beyond_loopback_without_a_key_warns(
    host: str, keys: list[str], warns: bool
) -> None:
    """Only a collector reachable from other machines and open to anyone gets the warning."""
    assert bool(exposure_warning(host, keys)) is warns


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "collector.example"])
def test_serving_beyond_loopback_without_a_key_is_refused(
    host: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without a key and without --allow-anonymous, `serve` beyond loopback exits 1 naming both."""
    assert main(["serve", "--host", host, "--port", "0"]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"fluxgate-async serve: error: refusing to serve {host} without an API key: anyone who "
        "can reach it could read and write events; give --api-key KEY, or --allow-anonymous "
        "to accept that\n"
    )


def test_allow_anonymous_lets_serve_past_the_refusal(tmp_path: Path) -> None:
    """With --allow-anonymous, `serve` on 0.0.0.0 goes on to open its database (here, failing)."""
    result = run_cli(
        "serve",
        "--host",
        "0.0.0.0",
        "--allow-anonymous",
        "--port",
        "0",
        "--db",
        str(tmp_path / "no-dir" / "x.sqlite"),
    )
    assert result.returncode == 1
    assert result.stderr.startswith("fluxgate-async serve: error: cannot open database")


def test_serve_help_names_allow_anonymous(capsys: pytest.CaptureFixture[str]) -> None:
    """`serve --help` explains --allow-anonymous."""
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--allow-anonymous serve a --host other than loopback with no API key" in help_text


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """--version prints the installed version."""
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("fluxgate-async 0.")


def test_empty_api_key_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """`serve --api-key ''` would let an empty Bearer token in: it is refused before serving."""
    assert main(["serve", "--api-key", "good", "--api-key", " "]) == 1
    assert capsys.readouterr().err == "fluxgate-async serve: error: an API key must not be empty\n"


def test_unopenable_database_is_one_line(tmp_path: Path) -> None:
    """`serve` with a database it cannot create fails with one line."""
    result = run_cli("serve", "--port", "0", "--db", str(tmp_path / "no-dir" / "x.sqlite"))
    assert result.returncode == 1
    assert result.stderr.startswith("fluxgate-async serve: error: cannot open database")
    assert result.stderr.count("\n") == 1


def test_report_events_exports_every_event_across_pages(
    filled_db: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`report --events` follows the cursor through every page: JSON lines, or CSV."""
    monkeypatch.setattr("fluxgate_async.cli._report.EXPORT_PAGE_SIZE", 2)
    capsys.readouterr()
    assert main(["report", "--db", filled_db, "--events"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["event"]["metadata"]["feature"] for e in lines] == ["chat", "chat", "search"]
    assert len({e["id"] for e in lines}) == 3
    assert main(["report", "--db", filled_db, "--events", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["id"] for r in rows] == [e["id"] for e in lines]
    assert [(r["model"], r["feature"], r["eventStatus"]) for r in rows] == [
        ("gpt-4o", "chat", "SUCCESS"),
        ("gpt-4o", "chat", "SUCCESS"),
        ("acme-7b", "search", "SUCCESS"),
    ]
    assert json.loads(rows[2]["event"]) == lines[2]["event"]
    assert main(["report", "--db", filled_db, "--events", "--since", "2999-01-01"]) == 0
    assert capsys.readouterr().out == ""


def test_report_events_is_not_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    """`--events --format table` is refused: events export as JSON lines or CSV."""
    assert main(["report", "--events", "--format", "table"]) == 1
    assert "--events writes json (JSON lines) or csv" in capsys.readouterr().err


def test_the_database_comes_from_fluxgate_db(
    filled_db: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --db, `report` (like `serve`) uses $FLUXGATE_DB."""
    monkeypatch.setenv("FLUXGATE_DB", filled_db)
    capsys.readouterr()
    assert main(["report", "--format", "json"]) == 0
    assert sum(row["calls"] for row in json.loads(capsys.readouterr().out)["rows"]) == 3


def test_serve_on_postgres_hides_the_password(pg_url: str) -> None:
    """`serve` from $FLUXGATE_DB on PostgreSQL prints where it stores, never the password."""
    url = pg_url.replace("postgres@", "postgres:not-checked-by-trust@")
    proc = CollectorProcess(None, env={"FLUXGATE_DB": url})
    proc.start()
    code, out, err = proc.stop()
    assert code == 0, err
    assert "not-checked-by-trust" not in out + err
    assert f"database {url.replace('not-checked-by-trust', '***')}" in out


def test_report_on_an_unreachable_postgres_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """A PostgreSQL server that does not answer is one line, exit status 1."""
    assert main(["report", "--db", f"postgresql://u:pw@127.0.0.1:{free_port()}/db"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("fluxgate-async report: error: cannot open database")
    assert "pw" not in err.replace("postgresql", "")


def test_serve_prints_a_line_per_request(db: Path) -> None:
    """`serve` prints method, path, status and milliseconds for each request it answers."""
    proc = CollectorProcess(db, log_requests=True)
    proc.start()
    try:
        with pytest.raises(urllib.error.HTTPError):
            proc.get("/api/summary?group_by=colour")
        body = json.dumps({"usage": {"inputTokens": 1, "outputTokens": 1}}).encode()
        request = urllib.request.Request(proc.url, data=body, method="POST")
        with urllib.request.urlopen(request, timeout=5) as resp:
            assert resp.status == 200
    finally:
        code, out, _ = proc.stop()
    assert code == 0
    lines = [line for line in out.splitlines() if not line.startswith("fluxgate-async")]
    assert re.fullmatch(r"GET /healthz 200 \d+\.\d ms", lines[0])
    assert re.fullmatch(r"GET /api/summary\?group_by=colour 400 \d+\.\d ms", lines[-2])
    assert re.fullmatch(r"POST /api/events 200 \d+\.\d ms", lines[-1])


def test_serve_prints_no_request_lines_by_default(collector_process: CollectorProcess) -> None:
    """Without `--access-log`, `serve` prints its start line and nothing per request."""
    collector_process.get("/healthz")
    code, out, _ = collector_process.stop()
    assert code == 0
    assert [line for line in out.splitlines() if "/healthz" in line] == []


def test_csv_costs_are_decimals(capsys: pytest.CaptureFixture[str]) -> None:
    """CSV writes a small cost as 0.000009, not 9e-06, and a missing one as an empty cell."""
    row: dict[str, Any] = {"calls": 1, "inputTokens": 3, "outputTokens": 0, "tokens": 3}
    row |= {"unpriced": 0, "errors": 0}
    rows = [{"model": "tiny", **row, "cost": 9e-06}, {"model": "acme", **row, "cost": None}]
    print_report(rows, by="model", fmt="csv")
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "tiny,1,3,0,3,0.000009,0,0"
    assert lines[2] == "acme,1,3,0,3,,0,0"
