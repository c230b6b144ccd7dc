"""What of a command line may be kept in history: secrets are replaced before it is recorded.

Every event's Cause keeps the command that caused it, and history is kept for good, so a
secret typed on the command line would outlive the command. The rule, applied to each
argument:

1. The value of every ``--env``/``-e`` option of shimledger itself (before ``--``):
   ``--env DB_PASSWORD=hunter2`` -> ``--env DB_PASSWORD=<redacted>``, whatever the key.
2. Anywhere, ``KEY=VALUE`` whose key looks secret (a word such as ``pass``, ``pwd``,
   ``key``, ``auth``, ``cookie``, ``session``, or a part such as ``passw``, ``secret``,
   ``token``, ``credential``, ``apikey``), also inside one argument
   (``sh -c 'MYSQL_PWD=x mysql'``) and after a dash (``--db-password=x``); and the value
   after a secret-looking option given apart (``--password x``). ``PWD`` alone is the
   working directory, not a secret.
3. Anywhere, the password of a URL (``postgresql://user:PASSWORD@host/db``, as ``--store``
   takes): ``postgresql://user:<redacted>@host/db``.

Keys, option names and everything else stay, so history still says what was run.
"""

from __future__ import annotations

import re

from adapters.url_redaction import REDACTED, redact_url_passwords

ENV_OPTIONS = ("--env", "-e")
SECRET_PARTS = ("passw", "passphrase", "secret", "token", "credential", "apikey", "privatekey",
                "accesskey")  # fmt: skip
SECRET_WORDS = frozenset({"pass", "pwd", "pw", "key", "auth", "cookie", "session", "private"})

# KEY=VALUE inside an argument: a key not glued to a word before it, and its value up to
# a space, & or ; (a shell's or a URL query's separators), or a whole quoted string.
_ASSIGNMENT = re.compile(r"(?<![\w.-])(-{0,2}[A-Za-z_][\w.-]*)=(\"[^\"]*\"?|'[^']*'?|[^\s&;]*)")
_OPTION = re.compile(r"-{1,2}[A-Za-z][\w.-]*")


def looks_secret(key: str) -> bool:
    """True for a name that usually holds a secret: DB_PASSWORD, apiKey, MYSQL_PWD..."""
    name = key.lstrip("-").lower()
    if name == "pwd":
        return False
    words = set(re.split(r"[^a-z0-9]+", name))
    return bool(words & SECRET_WORDS) or any(part in name for part in SECRET_PARTS)


def redact_argument(argument: str) -> str:
    """One argument with every secret-looking value and URL password replaced."""

    def assignment(match: re.Match[str]) -> str:
        key = match.group(1)
        return f"{key}={REDACTED}" if looks_secret(key) else match.group(0)

    return _ASSIGNMENT.sub(assignment, redact_url_passwords(argument))


def _env_value(value: str) -> str:
    key, equals, _ = value.partition("=")
    return f"{key}={REDACTED}" if equals else REDACTED


def redact_command(argv: list[str]) -> list[str]:
    """``argv`` as history may keep it (the module's docstring says the rule)."""
    kept: list[str] = []
    ours = True  # before "--": shimledger's own options, parsed as click parses them
    hide_next = False
    for argument in argv:
        if hide_next:
            kept.append(_env_value(argument) if kept[-1] in ENV_OPTIONS else REDACTED)
            hide_next = False
            continue
        if ours and argument == "--":
            ours = False
        elif ours and argument in ENV_OPTIONS:
            hide_next = True
        elif ours and argument.startswith("--env="):
            argument = "--env=" + _env_value(argument.removeprefix("--env="))
        elif ours and argument.startswith("-e") and not argument.startswith("--"):
            argument = "-e" + _env_value(argument[2:])
        elif _OPTION.fullmatch(argument) and looks_secret(argument):
            hide_next = True  # --password VALUE: the value comes next
        kept.append(redact_argument(argument))
    return kept
