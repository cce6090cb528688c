"""``docs/rpc.md``, the RPC reference, generated from the files that define the RPCs.

Each public function's section is read from its schema file (``supabase/schemas/*.sql``): the
signature and result as written, the ``comment on function`` text, the docblock above it, and
its ``grant execute`` lines; ``supabase/roles.sql`` adds the login roles that may call it. The
SQLSTATE table comes from the conventions block of ``000_schema_google_ai_internal.sql`` (with
the RPCs whose docblocks name each code), and the client's exceptions from the docstrings of
``llm_limits.errors``. So the reference cannot say what the code does not::

    python -m llm_limits.testing.rpc_docs write     # regenerate docs/rpc.md
    python -m llm_limits.testing.rpc_docs check     # exit 1 when docs/rpc.md is stale

``tests/docs/test_rpc_docs.py`` runs the check in ``make test``.
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from llm_limits import errors
from llm_limits.testing.schemas import schema_files

OUTPUT = Path("docs/rpc.md")
ROLES_SQL = Path("supabase/roles.sql")
CONVENTIONS = Path("supabase/schemas/000_schema_google_ai_internal.sql")
AUDIT_RECORDS = Path("supabase/schemas/080_table_google_ai_audit_records.sql")
_CREATE = re.compile(r"^create (?:or replace )?function public\.(\w+)\(", re.M)
_ATTRIBUTE = re.compile(r"^\s*(language|volatile|stable|immutable|security|set|as)\b", re.M)
REGENERATE = "run python -m llm_limits.testing.rpc_docs write"
_SQLSTATE = re.compile(r"\bLL\d{3}\b")


@dataclass(frozen=True)
class Rpc:
    name: str
    arguments: str  # as written, one line
    returns: str  # as written, one line
    comment: str
    docblock: str
    source: Path  # relative to the project
    callers: tuple[str, ...]  # roles with EXECUTE: the schema file's grants, then roles.sql's


def _one_line(sql: str) -> str:
    text = re.sub(r"\s+", " ", sql).strip()
    return text.replace("( ", "(").replace(" )", ")").replace(" [", "[")


def _closing_paren(text: str, start: int) -> int:
    """The index of the parenthesis that closes the one at ``start``."""
    depth = 0
    for i in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return i
    raise ValueError(f"unbalanced parentheses after offset {start}")


def _docblock(before: str) -> str:
    """The ``/* ... */`` block that ends right above a statement, without its stars."""
    start, end = before.rfind("/*"), before.rfind("*/")
    if start < 0 or end < start or before[end + 2 :].strip():
        return ""
    body = before[start + 2 : end].splitlines()
    lines = [re.sub(r"^\s*\* ?", "", line).rstrip() for line in body]
    return "\n".join(lines).strip("\n")


def _sql_string(text: str) -> str:
    """The SQL literal ``'...'`` at the start of ``text`` (``''`` is one quote)."""
    match = re.match(r"\s*'((?:[^']|'')*)'", text)
    if match is None:
        raise ValueError(f"no string literal at {text[:40]!r}")
    return match.group(1).replace("''", "'")


def _comment(sql: str, name: str) -> str:
    match = re.search(rf"^comment on function public\.{name}\([^)]*\) is\s*", sql, re.M)
    return _sql_string(sql[match.end() :]) if match else ""


def _grantees(sql: str, name: str) -> list[str]:
    pattern = rf"^grant execute on function public\.{name}\([^)]*\)\s+to\s+([^;]+);"
    return [g.strip() for m in re.finditer(pattern, sql, re.M) for g in m.group(1).split(",")]


def role_grants(project_dir: Path) -> dict[str, list[str]]:
    """RPC name -> the login roles ``supabase/roles.sql`` grants it to."""
    out: dict[str, list[str]] = {}
    text = (project_dir / ROLES_SQL).read_text()
    for role, name in re.findall(r"\('(\w+)',\s*'public\.(\w+)\(", text):
        out.setdefault(name, []).append(role)
    return out


def read_rpcs(project_dir: Path) -> list[Rpc]:
    """Every public function of the schema files, in file order."""
    extra = role_grants(project_dir)
    rpcs = []
    for path in schema_files(project_dir):
        sql = path.read_text()
        for match in _CREATE.finditer(sql):
            name = match.group(1)
            close = _closing_paren(sql, match.end() - 1)
            header_end = _ATTRIBUTE.search(sql, close).start()  # type: ignore[union-attr]
            returns = _one_line(sql[close + 1 : header_end])
            rpcs.append(
                Rpc(
                    name=name,
                    arguments=_one_line(sql[match.end() : close]),
                    returns=re.sub(r"^returns ", "", returns),
                    comment=_comment(sql, name),
                    docblock=_docblock(sql[: match.start()]),
                    source=path.relative_to(project_dir),
                    callers=tuple(dict.fromkeys(_grantees(sql, name) + extra.get(name, []))),
                )
            )
    return rpcs


def sqlstates(project_dir: Path) -> list[tuple[str, str]]:
    """(code, meaning) from the SQLSTATE table of the conventions block, in code order."""
    text = (project_dir / CONVENTIONS).read_text()
    block = text[text.index("SQLSTATEs of llm-limits") :]
    block = block[: block.index("\n--   * ", 1)]
    lines = [re.sub(r"^--\s*", "", line) for line in block.splitlines()[1:]]
    found: dict[str, str] = {}
    last = ""
    for line in lines:
        parts = re.split(r"\s*(LL\d{3})\s+", " " + line)
        if len(parts) == 1:  # a continuation of the entry above
            found[last] += " " + line.strip()
            continue
        for code, meaning in zip(parts[1::2], parts[2::2], strict=True):
            found[code], last = meaning.strip(), code
    return sorted(found.items())


def audit_events(project_dir: Path) -> list[str]:
    """The events the audit stream can hold: the check constraint on its `event` column."""
    text = (project_dir / AUDIT_RECORDS).read_text()
    constraint = re.search(r"event text not null check \(\s*event in \((.*?)\)", text, re.S)
    if constraint is None:
        raise ValueError(f"no event check constraint in {AUDIT_RECORDS}")
    return re.findall(r"'(\w+)'", constraint.group(1))


def _markdown(doc: str) -> str:
    """A docstring's reStructuredText literals as Markdown, on one line."""
    return re.sub(r"\s+", " ", doc.replace("``", "`")).strip()


def _exceptions() -> list[tuple[str, str, str]]:
    """(class, base, doc) of every exception in ``llm_limits.errors``, in definition order."""
    classes = [
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.LimitsError) and cls.__module__ == errors.__name__
    ]
    classes.sort(key=lambda cls: inspect.getsourcelines(cls)[1])
    return [
        (c.__name__, c.__bases__[0].__name__, _markdown(inspect.getdoc(c) or "")) for c in classes
    ]


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render(project_dir: Path) -> str:
    """The whole of docs/rpc.md."""
    rpcs = read_rpcs(project_dir)
    out = [
        "# RPC reference",
        "",
        "<!-- Generated by `python -m llm_limits.testing.rpc_docs write` from",
        "supabase/schemas/*.sql, supabase/roles.sql and client/llm_limits/errors.py.",
        "Do not edit: change those files and run it again; make test fails while it is stale. -->",
        "",
        "Every RPC lives in `public`, is `SECURITY DEFINER` with `search_path = ''`, and is",
        "executable only by the roles listed with it (`service_role`, and the login roles of",
        "[`supabase/roles.sql`](../supabase/roles.sql)). Call them with named arguments:",
        "`select * from public.acquire(model => 'gemma-3-27b', tokens => 1200)`.",
        "",
        "| RPC | who may call it | what it does |",
        "|---|---|---|",
    ]
    for rpc in rpcs:
        first = rpc.comment.split(". ")[0].rstrip(".") + "."
        callers = ", ".join(f"`{c}`" for c in rpc.callers)
        out.append(f"| [`{rpc.name}`](#{rpc.name}) | {callers} | {_cell(first)} |")
    for rpc in rpcs:
        out += [
            "",
            f"## {rpc.name}",
            "",
            f"`public.{rpc.name}({rpc.arguments})` returns `{rpc.returns}`",
            "",
            f"Defined in [`{rpc.source}`](../{rpc.source}). "
            f"Callable by {', '.join(f'`{c}`' for c in rpc.callers)}.",
            "",
            rpc.comment,
            "",
            "```text",
            rpc.docblock,
            "```",
        ]
    out += [
        "",
        "## SQLSTATEs",
        "",
        "Bad input raises one of these, with `DETAIL` and `HINT`, and changes nothing. A refusal",
        "is never an error: it is `acquire`'s row. The Python client raises each as",
        "`llm_limits.RpcError`, with the code in `.sqlstate`.",
        "",
        "| SQLSTATE | meaning | named by |",
        "|---|---|---|",
    ]
    for code, meaning in sqlstates(project_dir):
        by = [r.name for r in rpcs if code in _SQLSTATE.findall(r.docblock)]
        out.append(f"| `{code}` | {_cell(meaning)} | {', '.join(f'`{n}`' for n in by) or '-'} |")
    out += [
        "",
        "## Audit events",
        "",
        "The events `google_ai_audit_log` can hold (`public.audit_event_kinds` reads the same",
        f"list back from the check constraint in [`{AUDIT_RECORDS}`](../{AUDIT_RECORDS})):",
        ", ".join(f"`{event}`" for event in audit_events(project_dir)) + ".",
    ]
    out += [
        "",
        "## The Python client's exceptions",
        "",
        "All are subclasses of `llm_limits.LimitsError`. After the last attempt, Google's own",
        "errors reach the caller unchanged, as `google.genai.errors.APIError` subclasses.",
        "",
        "| exception | subclass of | when |",
        "|---|---|---|",
    ]
    for name, base, doc in _exceptions():
        out.append(f"| `{name}` | `{base}` | {_cell(doc)} |")
    return "\n".join(out) + "\n"


def stale(project_dir: Path) -> bool:
    path = project_dir / OUTPUT
    return not path.exists() or path.read_text() != render(project_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llm_limits.testing.rpc_docs")
    parser.add_argument("action", choices=("write", "check"))
    parser.add_argument("--project-dir", type=Path, default=Path.cwd())
    args = parser.parse_args(argv)
    project: Path = args.project_dir
    if args.action == "write":
        (project / OUTPUT).parent.mkdir(parents=True, exist_ok=True)
        (project / OUTPUT).write_text(render(project))
        return 0
    if stale(project):
        print(
            f"{OUTPUT} is stale: run python -m llm_limits.testing.rpc_docs write", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
