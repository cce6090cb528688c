"""What the README names, parsed from its Markdown, and where each name is looked up.

Each lookup returns problems as ``(name, what is wrong)``: the name is the token a reader would
type or search for (a subcommand, a flag, an env var, a path, an identifier).

* commands: ``llm-limits …`` in the CLI's own ``--help`` (subcommands, options, choices),
  ``supabase …`` in the pinned Supabase CLI's ``--help``, ``make …`` in the Makefile,
  ``python -m …`` as an importable module, ``psql -f …`` as a file;
* env vars: in the code that reads them (client, gateway, scripts, examples);
* Python calls: every keyword argument in the signature of the function called;
* identifiers: in the database's catalog (functions, tables, columns, types) or the code;
* paths and links: in the tree (a link's anchor among the target's headings).
"""

from __future__ import annotations

import ast
import functools
import inspect
import re
import shlex
import subprocess
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
Problem = tuple[str, str]

# The code a name must appear in (not the documents that describe it).
CODE = (
    "client/llm_limits/**/*.py",
    "client/llm_limits/local/*.sql",
    "supabase/functions/llm-gateway/*.ts",
    "supabase/schemas/*.sql",
    "supabase/roles.sql",
    "supabase/config.toml",
    "scripts/*.sh",
    "examples/**/*.py",
    "Makefile",
    "pyproject.toml",
)


@dataclass(frozen=True)
class Readme:
    text: str
    blocks: list[tuple[str, str]]  # (language, code) of each fenced block
    spans: list[str]  # inline code outside the blocks, `\|` unescaped
    links: list[str]  # link targets


def parse(text: str) -> Readme:
    blocks = [(m[1], m[2]) for m in re.finditer(r"^```(\w*)\n(.*?)^```$", text, re.M | re.S)]
    prose = re.sub(r"^```.*?^```$", "", text, flags=re.M | re.S)
    spans = [s.replace("\\|", "|") for s in re.findall(r"`([^`\n]+)`", prose)]
    links = re.findall(r"\]\(([^)\s]+)\)", prose)
    return Readme(text, blocks, spans, links)


@functools.cache
def code_text() -> str:
    files = {p for pattern in CODE for p in ROOT.glob(pattern) if "node_modules" not in p.parts}
    return "\n".join(p.read_text(errors="replace") for p in sorted(files))


def in_code(name: str) -> bool:
    return re.search(rf"(?<![\w.-]){re.escape(name)}(?![\w-])", code_text()) is not None


# -- commands ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Help:
    subcommands: frozenset[str]
    options: frozenset[str]
    choices: dict[str, frozenset[str]]  # option -> the values it accepts, where it says


def _sections(text: str, heading: Callable[[str], bool]) -> Iterator[str]:
    """The lines of the sections whose heading line satisfies ``heading``."""
    inside = False
    for line in text.splitlines():
        if line and not line[0].isspace():
            inside = heading(line.strip())
        elif inside:
            yield line


def _option_column(lines: Iterable[str]) -> Iterator[str]:
    for line in lines:
        match = re.match(r"^ {2}(-\S.*?)(?: {2,}|$)", line)
        if match:
            yield match.group(1)


def _help(subcommand_lines: Iterable[str], option_lines: Iterable[str]) -> Help:
    subs = set()
    for line in subcommand_lines:
        match = re.match(r"^ {2}(\S.*?)(?: {2,}| \S| ?$)", line)
        if match:
            subs.update(name.strip() for name in match.group(1).split(","))
    options: set[str] = {"--help"}
    choices: dict[str, frozenset[str]] = {}
    for column in _option_column(option_lines):
        names = re.findall(r"(?<![\w<|])--?[A-Za-z][\w-]*", column)
        options.update(names)
        metavar = re.search(r"<([\w-]+(?:\|[\w-]+)+)>", column)
        if metavar and names:
            choices[names[0]] = frozenset(metavar.group(1).split("|"))
    return Help(frozenset(subs), frozenset(options), choices)


@functools.cache
def llm_limits_help(path: tuple[str, ...]) -> Help | None:
    from typer.testing import CliRunner

    from llm_limits.cli.app import app

    result = CliRunner().invoke(app, [*path, "--help"], prog_name="llm-limits")
    if result.exit_code != 0:
        return None
    text = result.output
    return _help(
        _sections(text, lambda h: h == "Commands:"), _sections(text, lambda h: h == "Options:")
    )


@functools.cache
def supabase_help(path: tuple[str, ...]) -> Help | None:
    cli = ROOT / "node_modules" / ".bin" / "supabase"
    proc = subprocess.run([cli, *path, "--help"], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0 or not proc.stdout.startswith("DESCRIPTION"):
        return None
    text = proc.stdout
    usage = next(_sections(text, lambda h: h == "USAGE"), "")
    if path and f"supabase {' '.join(path)}" not in usage:
        return None  # an unknown subcommand prints its parent's help
    return _help(
        _sections(text, lambda h: h == "SUBCOMMANDS"),
        _sections(text, lambda h: h in ("FLAGS", "GLOBAL FLAGS")),
    )


def check_command(
    program: str, args: list[str], lookup: Callable[..., Help | None]
) -> list[Problem]:
    """Walk ``args`` down the command tree: subcommands, then options and choice values.

    A group takes no arguments, so each of its words must be a subcommand; `a|b` names
    alternatives and ends the walk. A leaf's words that are not options are its arguments.
    """
    path: list[str] = []
    problems: list[Problem] = []
    choices: frozenset[str] | None = None
    for token in args:
        where = f"`{' '.join([program, *path])}`"
        here = lookup(tuple(path))
        if here is None:
            return [*problems, (path[-1], f"{where} has no --help")]
        if choices is not None:
            problems += [
                (v, f"not a choice of {where}") for v in token.split("|") if v not in choices
            ]
            choices = None
        elif token.startswith("-"):
            flag, _, value = token.partition("=")
            for name in flag.split("/"):
                if name not in here.options:
                    problems.append((name, f"not an option of {where}"))
            choices = here.choices.get(flag)
            if choices is not None and value:
                problems += [
                    (v, f"not a choice of {where}") for v in value.split("|") if v not in choices
                ]
                choices = None
        elif here.subcommands:
            missing = [t for t in token.split("|") if t not in here.subcommands]
            problems += [(t, f"not a subcommand of {where}") for t in missing]
            if missing or "|" in token:
                break
            path.append(token)
    if path and lookup(tuple(path)) is None:
        problems.append((path[-1], f"`{program} {' '.join(path)}` has no --help"))
    return problems


def commands(readme: Readme) -> list[list[str]]:
    """Every command the README shows: its bash lines and its inline `llm-limits …`-like code."""
    lines: list[str] = []
    for language, code in readme.blocks:
        if language in ("bash", "sh", ""):
            lines += code.replace("\\\n", " ").splitlines()
    lines += [s for s in readme.spans if re.match(r"(llm-limits|make|npx|supabase|python) ", s)]
    out = []
    for line in (part for text in lines for part in re.split(r"\s(?:&&|;)\s", text)):
        line = re.sub(r"(^|\s)#.*$", "", line).strip()  # a comment
        if not line:
            continue
        try:
            tokens = shlex.split(line)
        except ValueError:
            tokens = line.split()
        while tokens and (tokens[0] in ("sudo", "npx") or re.match(r"^[A-Z_]+=", tokens[0])):
            tokens = tokens[1:]
        if tokens:
            out.append(tokens)
    return out


def makefile_targets() -> set[str]:
    return set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))


def check_commands(readme: Readme) -> list[Problem]:
    problems: list[Problem] = []
    for tokens in commands(readme):
        program, args = tokens[0], tokens[1:]
        if program == "llm-limits":
            problems += check_command(program, args, llm_limits_help)
        elif program == "supabase":
            problems += check_command(program, args, supabase_help)
        elif program == "make":
            problems += [(t, "not a Makefile target") for t in args if "=" not in t
                         and t not in makefile_targets()]  # fmt: skip
        elif program.startswith("python") and args[:1] == ["-m"] and len(args) > 1:
            if not module_exists(args[1]):
                problems.append((args[1], "no such module"))
        elif program == "psql" and "-f" in args:
            path = args[args.index("-f") + 1]
            if not (ROOT / path).exists():
                problems.append((path, "no such file"))
    return problems


def module_exists(name: str) -> bool:
    import importlib.util

    try:
        if importlib.util.find_spec(name) is not None:
            return True
    except ModuleNotFoundError:
        pass
    base = ROOT.joinpath(*name.split("."))
    return base.with_suffix(".py").exists() or (base / "__main__.py").exists()


# -- env vars ----------------------------------------------------------------------------------

ENV_NAME = r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+"


def env_vars(readme: Readme) -> set[str]:
    names = {s for s in readme.spans if re.fullmatch(ENV_NAME, s)}
    for language, code in readme.blocks:
        if language in ("bash", "sh"):
            names.update(re.findall(rf"(?:^|\s)(?:export\s+)?({ENV_NAME})=", code, re.M))
            names.update(re.findall(rf"\$\{{?({ENV_NAME})", code))
        if language == "python":
            names.update(re.findall(rf"(?:environ\[|get_secret\()\"({ENV_NAME})\"", code))
    return names


def check_env_vars(readme: Readme) -> list[Problem]:
    return [(name, "read by no code in the tree") for name in sorted(env_vars(readme))
            if not in_code(name)]  # fmt: skip


# -- Python calls ------------------------------------------------------------------------------


def _signature_of(call: ast.Call) -> tuple[str, Any] | None:
    import llm_limits

    func = call.func
    if not isinstance(func, ast.Attribute):
        return None
    chain = [func.attr]
    node: ast.expr = func.value
    while isinstance(node, ast.Attribute):
        chain.insert(0, node.attr)
        node = node.value
    root = node.id if isinstance(node, ast.Name) else ""
    if root == "llm_limits" and chain[0] in ("generate", "agenerate"):
        return f"llm_limits.{chain[0]}", getattr(llm_limits.Client, chain[0])
    if root == "llm_limits" and chain == ["Client", "from_env"]:
        return "llm_limits.Client", llm_limits.Client.__init__
    if root == "llm_limits":
        target: Any = llm_limits
        for attr in chain:
            target = getattr(target, attr, None)
        return ".".join([root, *chain]), target
    if len(chain) == 1 and chain[0] in ("generate", "agenerate"):
        return f"Client.{chain[0]}", getattr(llm_limits.Client, chain[0])
    return None


def check_python(readme: Readme) -> list[Problem]:
    problems: list[Problem] = []
    for language, code in readme.blocks:
        if language != "python":
            continue
        source = "\n".join(line for line in code.splitlines() if not line.startswith("!"))
        tree = compile(
            source, "README.md", "exec", ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        )
        for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
            found = _signature_of(call)
            if found is None:
                continue
            name, target = found
            if target is None:
                problems.append((name, "no such name in llm_limits"))
                continue
            parameters = inspect.signature(target).parameters
            for keyword in call.keywords:
                if keyword.arg is not None and keyword.arg not in parameters:
                    problems.append((keyword.arg, f"not a parameter of {name}"))
    return problems


# -- identifiers, paths, links -----------------------------------------------------------------


def identifiers(readme: Readme) -> set[str]:
    """Inline code that is one SQL or Python name: `acquire`, `fallback_after_ms`, `public.x`."""
    return {s for s in readme.spans if re.fullmatch(r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?", s)}


def check_identifiers(readme: Readme, catalog: set[str]) -> list[Problem]:
    problems = []
    for name in sorted(identifiers(readme)):
        schema, _, bare = name.rpartition(".")
        if schema in ("public", "google_ai_internal"):
            if name not in catalog:
                problems.append((name, "not in the database's catalog"))
        elif schema == "llm_limits":
            if not module_exists(name) and not hasattr(__import__("llm_limits"), bare):
                problems.append((name, "not in llm_limits"))
        elif bare not in catalog and not in_code(name):
            problems.append((name, "neither in the catalog nor in the code"))
    return problems


def check_headers(readme: Readme) -> list[Problem]:
    gateway = "\n".join(
        p.read_text() for p in (ROOT / "supabase/functions/llm-gateway").glob("*.ts")
    )
    names = {s.split(":")[0] for s in readme.spans if s.startswith("x-")}
    return [(n, "not in the gateway's code") for n in sorted(names) if n not in gateway]


def wheel_name() -> str:
    import tomllib  # Python 3.11+, like the rest of the test kit

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    return f"llm_limits-{version}-py3-none-any.whl"


def paths(readme: Readme) -> set[str]:
    found = {
        s
        for s in readme.spans
        if re.fullmatch(r"\.?[\w.-]+(/[\w.-]*)+|[\w-]+\.(py|sql|md|toml|json|ts)", s)
    }
    found.update(
        link.split("#")[0] for link in readme.links if "://" not in link and link[0] != "#"
    )
    return {p for p in found if p}


def check_paths(readme: Readme) -> list[Problem]:
    problems = []
    for path in sorted(paths(readme)):
        if path.startswith("dist/"):
            if path != f"dist/{wheel_name()}":
                problems.append((path, f"`make wheel` writes dist/{wheel_name()}"))
        elif path.startswith(".llm-limits/"):
            if not in_code(path):
                problems.append((path, "no code writes there"))
        elif not (ROOT / path).exists():
            problems.append((path, "not in the tree"))
    return problems


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def check_anchors(readme: Readme) -> list[Problem]:
    problems = []
    for link in readme.links:
        if "#" not in link or "://" in link:
            continue
        target, anchor = link.split("#", 1)
        text = (ROOT / target).read_text() if target else readme.text
        headings = {slug(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}
        if anchor not in headings:
            problems.append((link, "no such heading"))
    return problems


def settings_table(readme: Readme) -> dict[str, str]:
    """The README's settings table: setting -> the default it states."""
    rows = re.findall(
        r"^\| `(\w+)` \| ([^|]+) \|", readme.text.split("| setting | default |")[1], re.M
    )
    return {name: default.strip() for name, default in rows}
