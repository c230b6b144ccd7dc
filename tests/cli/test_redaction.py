"""The rule that keeps secrets out of a recorded command line (cli/redaction.py)."""

from __future__ import annotations

import pytest

from cli.redaction import looks_secret, redact_command

R = "<redacted>"


@pytest.mark.parametrize(
    ("argv", "kept"),
    [
        (["exec", "--env", "A=1", "-e", "B", "t", "--", "env"],
         ["exec", "--env", f"A={R}", "-e", R, "t", "--", "env"]),
        (["exec", "--env=A=1", "-eB=2", "t"], ["exec", f"--env=A={R}", f"-eB={R}", "t"]),
        (["exec", "t", "--", "grep", "-e", "x=1"], ["exec", "t", "--", "grep", "-e", "x=1"]),
        (["exec", "t", "--", "sh", "-c", "MYSQL_PWD=x mysql -h db"],
         ["exec", "t", "--", "sh", "-c", f"MYSQL_PWD={R} mysql -h db"]),
        (["exec", "t", "--", "app", "--db-password=pw", "--api-key", "k", "--name", "n"],
         ["exec", "t", "--", "app", f"--db-password={R}", "--api-key", R, "--name", "n"]),
        (["exec", "t", "--", "env", "PWD=/srv", "TOKEN='a b'", "HOME=/root"],
         ["exec", "t", "--", "env", "PWD=/srv", f"TOKEN={R}", "HOME=/root"]),
        (["--store", "postgresql://me:pw@db:5432/h", "list"],
         ["--store", f"postgresql://me:{R}@db:5432/h", "list"]),
        (["--store=postgresql://me@/h?host=/run&password=pw", "list"],
         [f"--store=postgresql://me@/h?host=/run&password={R}", "list"]),
        (["run", "--bundle", "/srv/b", "web"], ["run", "--bundle", "/srv/b", "web"]),
    ],
)  # fmt: skip
def test_secret_values_are_replaced_and_the_rest_kept(argv: list[str], kept: list[str]) -> None:
    assert redact_command(argv) == kept


def test_what_looks_secret() -> None:
    secret = ["DB_PASSWORD", "PGPASSWORD", "apiKey", "GITHUB_TOKEN", "MYSQL_PWD",
              "AWS_SECRET_ACCESS_KEY", "--auth", "SESSION_ID", "client_credentials"]  # fmt: skip
    plain = ["PWD", "HOME", "PATH", "LANG", "--name", "MONKEY", "AUTHOR", "TERM"]
    assert [k for k in secret if not looks_secret(k)] == []
    assert [k for k in plain if looks_secret(k)] == []
