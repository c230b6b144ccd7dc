"""docker's and podman's query habits on events, history, audit and list: --since/--until
as Go durations and Unix timestamps, --filter key=value, --format with a Go template.

Through the real CLI (typer's runner over the app itself) on a store built through the
real event store (tests/cli/test_history_cli.py), so no runtime is needed; the label
filter, which reads a real task's config, has its test with a real container at the end.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cli.templates import parse_template
from cli.timeparse import parse_time
from domain.errors import InvalidArgumentError
from tests.cli.test_history_cli import cli


def lines(path: Path, *args: str) -> list[str]:
    code, out = cli(path, *args)
    assert code == 0, out
    return out.splitlines()


def records(path: Path, *args: str) -> list[dict]:
    return [json.loads(line) for line in lines(path, "events", "--json", *args)]


NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1h30m", NOW - timedelta(hours=1, minutes=30)),
        ("300ms", NOW - timedelta(milliseconds=300)),
        ("1.5h", NOW - timedelta(hours=1.5)),
        ("10m", NOW - timedelta(minutes=10)),
        ("2d", NOW - timedelta(days=2)),
        ("1764763200", datetime(2025, 12, 3, 12, 0, tzinfo=UTC)),
        ("1764763200.25", datetime(2025, 12, 3, 12, 0, 0, 250000, tzinfo=UTC)),
        ("0", datetime(1970, 1, 1, tzinfo=UTC)),  # docker's reading: the epoch, not now
        ("2026-12-03T11:00:00Z", datetime(2026, 12, 3, 11, 0, tzinfo=UTC)),
    ],
)
def test_a_time_is_read_in_every_form_docker_takes(text: str, expected: datetime) -> None:
    assert parse_time(text, now=NOW) == expected


@pytest.mark.parametrize("text", ["1h-", "h", "yesterday", "1.2.3", "12:00pm", "-5m"])
def test_what_is_no_time_names_every_form(text: str) -> None:
    with pytest.raises(InvalidArgumentError, match="Unix timestamp .* 1h30m"):
        parse_time(text, now=NOW)


def test_since_and_until_take_go_durations_and_timestamps(built_history) -> None:
    path, heads = built_history
    everything = len(records(path))
    assert everything == heads[-1]
    hour_ago = str(int((datetime.now(UTC) - timedelta(hours=1)).timestamp()))
    for since in ["1h30m", "3600s", hour_ago, "0"]:
        assert len(records(path, "--since", since)) == everything, since
    for until in ["1h30m", hour_ago]:
        assert records(path, "--until", until) == [], until
    # audit, history and list read the same forms
    summary = json.loads(cli(path, "audit", "--json", "--since", "90m")[1])["summary"]
    assert summary["incarnations"] == 5
    assert cli(path, "audit", "--until", "1h-")[0] == 1
    whole = json.loads(cli(path, "history", "ok", "--json", "--since", hour_ago)[1])
    assert len(whole) == 8
    assert cli(path, "history", "ok", "--json", "--until", "1h30m") == (0, "[]\n")
    tail = json.loads(cli(path, "history", "ok", "--json", "--since", whole[5]["timestamp"])[1])
    assert tail == whole[5:]
    listed = ["list", "--all-nodes", "-A", "-q"]
    assert lines(path, *listed, "--since", "1h") == [
        "default/ok", "default/stuck", "other/lost"]  # fmt: skip
    assert lines(path, *listed, "--until", "3600000ms") == []
    stuck = records(path, "--id", "stuck")[0]["timestamp"]
    assert lines(path, *listed, "--since", stuck) == ["default/stuck"]


def test_filters_of_one_key_any_value_of_several_keys_all(built_history) -> None:
    path, _ = built_history
    exits = records(path, "--filter", "type=exited")
    assert [(e["id"], e["exit_status"]) for e in exits] == [("ok", 0), ("ok", 137), ("lost", 255)]
    either = records(path, "--filter", "id=lost", "--filter", "id=stuck")
    assert {e["id"] for e in either} == {"lost", "stuck"} and len(either) == 7
    both = records(path, "--filter", "id=ok", "--filter", "event=Exited", "--filter",
                   "exit-code=137")  # fmt: skip
    assert [(e["type"], e["incarnation"]) for e in both] == [("Exited", 2)]
    assert [e["type"] for e in records(path, "--filter", "type=shim-lost")] == ["ShimLost"]
    assert {e["id"] for e in records(path, "--filter", "namespace=other")} == {"lost"}
    assert records(path, "--filter", "namespace=other", "--namespace", "default") == []


def test_history_and_audit_filter_too(built_history) -> None:
    path, _ = built_history
    killed = json.loads(cli(path, "history", "ok", "--json", "--filter", "type=Killed")[1])
    assert [(e["type"], e["incarnation"], e["signal"]) for e in killed] == [("Killed", 2, 9)]
    report = json.loads(cli(path, "audit", "--json", "--filter", "exit-code=137")[1])
    assert [(x["id"], x["incarnation"]) for x in report["lifetimes"]] == [("ok", 2)]
    # an incarnation is kept whole: its Created and Started are there for its lifetime
    assert report["lifetimes"][0]["started"] is not None
    report = json.loads(cli(path, "audit", "--json", "--filter", "type=oom")[1])
    assert [(x["id"], x["ooms"]) for x in report["lifetimes"]] == [("lost", 1)]


def test_templates_on_every_command(built_history) -> None:
    path, _ = built_history
    shown = lines(path, "events", "--filter", "type=exited",
                  "--format", "{{.ID}} {{.Type}} {{.ExitCode}} {{.Position}}")  # fmt: skip
    positions = [str(e["position"]) for e in records(path, "--filter", "type=exited")]
    assert shown == [f"ok Exited 0 {positions[0]}", f"ok Exited 137 {positions[1]}",
                     f"lost Exited 255 {positions[2]}"]  # fmt: skip
    whole = lines(path, "events", "--id", "never", "--format", "{{json .}}")
    assert [json.loads(x) for x in whole] == records(path, "--id", "never")
    cause = lines(path, "history", "ok", "--format", "{{.Incarnation}} {{json .Cause}}")
    assert cause[0] == '1 {"kind":"cli","user":"root","uid":0,"pid":1,' \
                       '"command":"shimledger test","host":"h"}'  # fmt: skip
    assert lines(path, "history", "ok", "--format", "{{.Signal}}")[6:] == ["9", "9"]
    assert lines(path, "history", "ok", "--format", "{{.Signal}}")[0] == "<no value>"
    table = lines(path, "audit", "--format", r"table {{.ID}}\t{{.Incarnation}}\t{{.ExitStatus}}")
    assert table[0].split() == ["ID", "INCARNATION", "EXIT", "STATUS"]
    assert [row.split() for row in table[1:]] == [
        ["ok", "1", "0"], ["ok", "2", "137"], ["lost", "1", "255"], ["never", "1", "<no"
         , "value>"], ["stuck", "1", "<no", "value>"]]  # fmt: skip
    assert len({row.index(row.split()[1]) for row in table[1:]}) == 1  # aligned columns
    listed = lines(path, "list", "--all-nodes", "-A", "--format", "{{.Namespace}}/{{upper .ID}}")
    assert listed == ["default/OK", "default/STUCK", "other/LOST"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["events", "--filter", "colour=red"], "unknown key 'colour'; use one of id, namespace"),
        (["events", "--filter", "label=a=b"], "events carry no labels"),
        (["events", "--filter", "type=Explode"], "no event is of type 'Explode'; the types are"),
        (["events", "--filter", "exit-code=one"], "an exit code is a number"),
        (["events", "--filter", "id"], "give KEY=VALUE"),
        (["list", "--filter", "type=Exited"], "unknown key 'type'; use one of id, namespace, "
                                              "status, exit-code, label"),
        (["history", "ok", "--filter", "id=x"], "unknown key 'id'; use one of type, event"),
        (["events", "--format", "{{.Nope}}"], "no field .Nope; the fields are all, bundle"),
        (["events", "--format", "{{shout .ID}}"], "no function 'shout'"),
        (["events", "--format", "{{.ID"], "an action is not closed"),
        (["audit", "--format", "{{.Type}}"], "no field .Type"),
        (["list", "--format", "yaml"], "unknown --format 'yaml'"),
        (["events", "--format", "xml"], "use table, json, cloudevents or a Go template"),
        (["events", "--json", "--format", "cloudevents"], "give --json or --format, not both"),
        (["history", "ok", "--json", "--format", "{{.ID}}"], "give --json or --format"),
        (["audit", "--json", "--format", "{{.ID}}"], "give --json or --format, not both"),
    ],
)
def test_every_bad_key_or_template_is_one_line(built_history, args: list, message: str) -> None:
    path, _ = built_history
    code, out = cli(path, *args)
    assert code == 1 and message in out and len(out.splitlines()) == 1, out


def test_template_parts() -> None:
    template = parse_template(r"table {{.ID}}\t{{lower .Status}}", ["id", "status"])
    assert template.render([{"id": "a", "status": "RUNNING"}]).splitlines() == [
        "ID" + " " * 18 + "STATUS", "a" + " " * 19 + "running"]  # fmt: skip
    assert parse_template("{{.}}", ["id"]).render([{"id": "a"}]) == '{"id":"a"}'
    nested = parse_template("{{.Cause.Kind}}", ["cause"])
    assert nested.render([{"cause": {"kind": "cli"}}, {"cause": None}]) == "cli\n<no value>"


@pytest.mark.real
def test_list_filters_by_a_label_of_the_tasks_config(cli_runner_settings) -> None:
    run, bundle_dir = cli_runner_settings
    assert run("create", "--bundle", str(bundle_dir), "tagged").returncode == 0
    try:
        for wanted, shown in [("label=team", ["tagged"]), ("label=team=ledger", ["tagged"]),
                              ("label=team=other", []), ("label=nobody", [])]:  # fmt: skip
            result = run("list", "-q", "--filter", wanted)
            assert (result.returncode, result.stdout.split()) == (0, shown), wanted
        result = run("list", "--filter", "label=team", "--format", "{{json .Annotations}}")
        assert json.loads(result.stdout) == {"team": "ledger"}
    finally:
        assert run("delete", "--force", "tagged").returncode == 0


@pytest.fixture
def cli_runner_settings(settings, bundle):
    from tests.conftest import cli_runner

    path = bundle("sleep", "60")
    config = json.loads((path / "config.json").read_text())
    config["annotations"] = {"team": "ledger"}
    (path / "config.json").write_text(json.dumps(config))
    return cli_runner(settings), path
