"""The declarative schema (``supabase/schemas``) and the check that the migrations build it.

``supabase/schemas/*.sql`` states the current definition of every object of llm-limits;
``supabase/migrations`` is how a deployed database gets there. This module builds a database
from the schema files and reads a database's catalog as text, one entry per object, so two
databases can be compared object by object:

    python -m llm_limits.testing.schemas build URL            # apply the schema files to URL
    python -m llm_limits.testing.schemas catalog URL          # print URL's catalog
    python -m llm_limits.testing.schemas check --admin-url URL
        # build one database from the schema files and one from the migrations
        # (`supabase db push`), print what differs, exit 1 if anything does

``supabase db push`` cannot apply schema files without Docker, so ``build`` runs them with
psql (ON_ERROR_STOP, one transaction) in the order ``supabase/config.toml`` lists them
(``[db.migrations] schema_paths``, globs sorted by name, as the Supabase CLI expands them).
The target database must already look like a hosted project (``localstack.bootstrap``).

What the catalog holds, for the schemas ``public`` and ``google_ai_internal`` (objects that
belong to an extension are left out):

* schemas: ACL, comment; default privileges granted in them;
* functions: kind, arguments, result, language, volatility, SECURITY DEFINER, strictness,
  leakproofness, parallel safety, cost, rows, ``SET`` options (proconfig), ACL, comment, and
  ``pg_get_functiondef`` exactly as the server prints it (the body is the source text);
* tables, views and other relations: kind, persistence, storage options, RLS flags, ACL,
  comment; each column in order with its type, nullability, default, identity, generation,
  collation, ACL and comment; constraints (``pg_get_constraintdef``, validity), indexes
  (``pg_get_indexdef``), triggers (``pg_get_triggerdef``, enabled state), RLS policies; a
  view's definition (``pg_get_viewdef``);
* sequences: type, bounds, start, increment, cache, cycle, owning column, ACL;
* types (composite, enum, domain, range): their attributes, labels or base type, comment;
* extensions (but plpgsql) and pg_cron jobs of the database, when pg_cron is there;
* optionally the rows of tables whose rows are part of the schema (``SCHEMA_ROWS``).

Owners are not compared: a hosted project's owner differs from a laptop's, and both
databases of a check are built by the same role anyway.
"""

from __future__ import annotations

import argparse
import difflib
import glob
import subprocess
import sys
import uuid
from collections.abc import Iterable
from pathlib import Path

import psycopg
from psycopg.rows import TupleRow

from llm_limits.local import localstack

SCHEMAS = ("public", "google_ai_internal")
# The queries below pass no parameters (so `%` in format() needs no escaping): the schema
# list goes in as this literal, oids as integers.
IN_OUR_SCHEMAS = "(" + ", ".join(f"'{s}'" for s in SCHEMAS) + ")"
# Tables whose rows the schema defines (the one settings row, the off clock switch): their
# contents are compared too, minus the columns that record when a row was written.
SCHEMA_ROWS = ("public.google_ai_settings", "google_ai_internal.clock_switch")
ROW_TIMESTAMPS = ("updated_at", "created_at")


class SchemaBuildError(RuntimeError):
    """The schema files could not be applied."""


def schema_files(project_dir: Path) -> list[Path]:
    """The schema files in the order Supabase applies them (config.toml ``schema_paths``)."""
    import tomllib  # Python 3.11+, like the rest of the testing kit

    supabase_dir = project_dir / "supabase"
    config = tomllib.loads((supabase_dir / "config.toml").read_text())
    patterns: list[str] = config.get("db", {}).get("migrations", {}).get("schema_paths", [])
    files: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(str(supabase_dir / pattern)))
        for match in matches:
            path = Path(match)
            found = sorted(path.rglob("*.sql")) if path.is_dir() else [path]
            files.extend(f for f in found if f not in files)
    if not files:
        raise SchemaBuildError(f"no schema files: [db.migrations] schema_paths in {supabase_dir}")
    return files


def build(url: str, project_dir: Path) -> None:
    """Apply the schema files to ``url`` with psql, in one transaction, stopping at an error."""
    cmd = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction", url]
    for path in schema_files(project_dir):
        cmd += ["-f", str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=project_dir)
    if proc.returncode != 0:
        raise SchemaBuildError(f"applying supabase/schemas failed:\n{proc.stderr.strip()}")


# -- reading a catalog -------------------------------------------------------------------------

Catalog = dict[str, str]
Conn = psycopg.Connection[TupleRow]


def _acl(column: str) -> str:
    """SQL for an ACL as sorted text ("default" when the object never had a grant or revoke)."""
    return (
        f"coalesce((select pg_catalog.string_agg(a::text, ' ' order by a::text) "
        f"from pg_catalog.unnest({column}) as a), 'default')"
    )


def _not_extension(oid: str, catalog: str) -> str:
    return (
        f"not exists (select from pg_catalog.pg_depend as d "
        f"where d.classid = '{catalog}'::regclass and d.objid = {oid} and d.deptype = 'e')"
    )


def _schemas(conn: Conn) -> Iterable[tuple[str, str]]:
    for name, acl, comment, defaults in conn.execute(
        f"""
        select
            n.nspname,
            {_acl("n.nspacl")},
            coalesce(pg_catalog.obj_description(n.oid, 'pg_namespace'), ''),
            (
                select pg_catalog.string_agg(
                    pg_catalog.format('  %s: %s', d.defaclobjtype, {_acl("d.defaclacl")}),
                    E'\\n' order by d.defaclobjtype, pg_catalog.pg_get_userbyid(d.defaclrole)
                )
                from pg_catalog.pg_default_acl as d
                where d.defaclnamespace = n.oid
            )
        from pg_catalog.pg_namespace as n
        where n.nspname in {IN_OUR_SCHEMAS}
        """
    ):
        text = f"acl: {acl}\ncomment: {comment}\ndefault privileges:\n{defaults or '  none'}"
        yield f"schema {name}", text


def _functions(conn: Conn) -> Iterable[tuple[str, str]]:
    rows = conn.execute(
        f"""
        select
            p.oid::regprocedure::text,
            case p.prokind when 'f' then 'function' when 'p' then 'procedure'
                           when 'a' then 'aggregate' else 'window' end,
            pg_catalog.pg_get_function_arguments(p.oid),
            pg_catalog.pg_get_function_result(p.oid),
            l.lanname,
            case p.provolatile when 'i' then 'immutable' when 's' then 'stable'
                               else 'volatile' end,
            p.prosecdef, p.proisstrict, p.proleakproof,
            case p.proparallel when 's' then 'safe' when 'r' then 'restricted'
                               else 'unsafe' end,
            p.procost, p.prorows,
            coalesce(pg_catalog.array_to_string(p.proconfig, ', '), ''),
            {_acl("p.proacl")},
            coalesce(pg_catalog.obj_description(p.oid, 'pg_proc'), ''),
            case when p.prokind in ('f', 'p') then pg_catalog.pg_get_functiondef(p.oid) end
        from pg_catalog.pg_proc as p
        inner join pg_catalog.pg_namespace as n on n.oid = p.pronamespace
        inner join pg_catalog.pg_language as l on l.oid = p.prolang
        where n.nspname in {IN_OUR_SCHEMAS} and {_not_extension("p.oid", "pg_proc")}
        """
    ).fetchall()
    labels = ["kind", "arguments", "result", "language", "volatility", "security definer"]
    labels += ["strict", "leakproof", "parallel", "cost", "rows", "config", "acl", "comment"]
    for sig, *fields, definition in rows:
        text = "".join(f"{label}: {value}\n" for label, value in zip(labels, fields, strict=True))
        yield f"function {sig}", f"{text}definition:\n{definition}"


def _relations(conn: Conn) -> Iterable[tuple[str, str]]:
    kinds = {"r": "table", "p": "table", "v": "view", "m": "materialized view", "f": "table"}
    rels = conn.execute(
        f"""
        select
            c.oid, c.oid::regclass::text, c.relkind::text, c.relpersistence::text,
            coalesce((select pg_catalog.string_agg(o, ', ' order by o)
                      from pg_catalog.unnest(c.reloptions) as o), ''),
            c.relrowsecurity, c.relforcerowsecurity, {_acl("c.relacl")},
            coalesce(pg_catalog.obj_description(c.oid, 'pg_class'), ''),
            case when c.relkind in ('v', 'm') then pg_catalog.pg_get_viewdef(c.oid, true) end
        from pg_catalog.pg_class as c
        inner join pg_catalog.pg_namespace as n on n.oid = c.relnamespace
        where n.nspname in {IN_OUR_SCHEMAS} and c.relkind in ('r', 'p', 'v', 'm', 'f')
            and {_not_extension("c.oid", "pg_class")}
        """
    ).fetchall()
    for oid, name, kind, persistence, options, rls, force, acl, comment, viewdef in rels:
        lines = [
            f"kind: {kinds[str(kind)]} ({kind})",
            f"persistence: {persistence}",
            f"options: {options}",
            f"row level security: {rls}, forced: {force}",
            f"acl: {acl}",
            f"comment: {comment}",
            "columns:",
        ]
        for (col,) in conn.execute(
            f"""
            select pg_catalog.concat_ws(' ',
                '  ' || pg_catalog.quote_ident(a.attname),
                pg_catalog.format_type(a.atttypid, a.atttypmod),
                case when a.attnotnull then 'not null' end,
                case when a.attgenerated = '' and d.adbin is not null
                     then 'default ' || pg_catalog.pg_get_expr(d.adbin, d.adrelid) end,
                case a.attidentity when 'a' then 'generated always as identity'
                                   when 'd' then 'generated by default as identity' end,
                case when a.attgenerated <> ''
                     then 'generated always as (' || pg_catalog.pg_get_expr(d.adbin, d.adrelid)
                          || ') stored' end,
                case when a.attcollation <> t.typcollation
                     then 'collate ' || a.attcollation::regcollation::text end,
                case when a.attacl is not null then 'acl ' || {_acl("a.attacl")} end
            ) || coalesce(
                E'\\n    comment: ' || pg_catalog.col_description(a.attrelid, a.attnum), ''
            )
            from pg_catalog.pg_attribute as a
            inner join pg_catalog.pg_type as t on t.oid = a.atttypid
            left join pg_catalog.pg_attrdef as d on d.adrelid = a.attrelid and d.adnum = a.attnum
            where a.attrelid = {int(oid)} and a.attnum > 0 and not a.attisdropped
            order by a.attnum
            """
        ):
            lines.append(str(col))
        if viewdef is not None:
            lines += ["definition:", str(viewdef)]
        for (line,) in conn.execute(
            f"""
            select line from (
                select 1 as k, c.conname::text as name,
                       pg_catalog.format('constraint %I %s%s', c.conname,
                           pg_catalog.pg_get_constraintdef(c.oid),
                           case when not c.convalidated then ' (not validated)' else '' end)
                       as line
                from pg_catalog.pg_constraint as c where c.conrelid = {int(oid)}
                union all
                select 2, i.relname::text,
                       pg_catalog.format('index %I %s', i.relname,
                                         pg_catalog.pg_get_indexdef(i.oid))
                from pg_catalog.pg_index as x
                inner join pg_catalog.pg_class as i on i.oid = x.indexrelid
                where x.indrelid = {int(oid)}
                union all
                select 3, t.tgname::text,
                       pg_catalog.format('trigger %I %s%s', t.tgname,
                           pg_catalog.pg_get_triggerdef(t.oid),
                           case when t.tgenabled <> 'O'
                                then ' (enabled: ' || t.tgenabled::text || ')' else '' end)
                from pg_catalog.pg_trigger as t
                where t.tgrelid = {int(oid)} and not t.tgisinternal
                union all
                select 4, p.polname::text,
                       pg_catalog.format('policy %I %s for %s to %s using (%s) with check (%s)',
                           p.polname,
                           case when p.polpermissive then 'permissive' else 'restrictive' end,
                           p.polcmd::text,
                           (select pg_catalog.string_agg(
                                       case when r = 0 then 'public' else r::regrole::text end,
                                       ', ' order by 1)
                            from pg_catalog.unnest(p.polroles) as r),
                           pg_catalog.pg_get_expr(p.polqual, p.polrelid),
                           pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid))
                from pg_catalog.pg_policy as p where p.polrelid = {int(oid)}
            ) as s
            order by k, name
            """
        ):
            lines.append(str(line))
        yield f"{kinds[str(kind)]} {name}", "\n".join(lines)


def _sequences(conn: Conn) -> Iterable[tuple[str, str]]:
    for name, text in conn.execute(
        f"""
        select
            c.oid::regclass::text,
            pg_catalog.format(
                E'as %s start %s increment %s min %s max %s cache %s cycle %s\\n'
                || E'owned by: %s\\nacl: %s\\ncomment: %s',
                s.seqtypid::regtype, s.seqstart, s.seqincrement, s.seqmin, s.seqmax,
                s.seqcache, s.seqcycle,
                coalesce((
                    select pg_catalog.format('%s.%I (%s)', d.refobjid::regclass, a.attname,
                        case d.deptype when 'i' then 'identity' else 'owned' end)
                    from pg_catalog.pg_depend as d
                    inner join pg_catalog.pg_attribute as a
                        on a.attrelid = d.refobjid and a.attnum = d.refobjsubid
                    where d.classid = 'pg_class'::regclass and d.objid = c.oid
                        and d.refclassid = 'pg_class'::regclass and d.deptype in ('a', 'i')
                ), 'none'),
                {_acl("c.relacl")},
                pg_catalog.obj_description(c.oid, 'pg_class')
            )
        from pg_catalog.pg_class as c
        inner join pg_catalog.pg_namespace as n on n.oid = c.relnamespace
        inner join pg_catalog.pg_sequence as s on s.seqrelid = c.oid
        where n.nspname in {IN_OUR_SCHEMAS} and {_not_extension("c.oid", "pg_class")}
        """
    ):
        yield f"sequence {name}", str(text)


def _types(conn: Conn) -> Iterable[tuple[str, str]]:
    for name, text in conn.execute(
        f"""
        select
            t.oid::regtype::text,
            pg_catalog.format(E'kind: %s\\n%s\\nacl: %s\\ncomment: %s',
                t.typtype,
                case t.typtype
                    when 'c' then (
                        select pg_catalog.string_agg(
                            pg_catalog.format('  %I %s', a.attname,
                                              pg_catalog.format_type(a.atttypid, a.atttypmod)),
                            E'\\n' order by a.attnum)
                        from pg_catalog.pg_attribute as a
                        where a.attrelid = t.typrelid and a.attnum > 0 and not a.attisdropped)
                    when 'e' then (
                        select 'labels: ' || pg_catalog.string_agg(
                            pg_catalog.quote_literal(e.enumlabel), ', ' order by e.enumsortorder)
                        from pg_catalog.pg_enum as e where e.enumtypid = t.oid)
                    when 'd' then pg_catalog.concat_ws(' ',
                        'over ' || pg_catalog.format_type(t.typbasetype, t.typtypmod),
                        case when t.typnotnull then 'not null' end,
                        'default ' || t.typdefault,
                        (select pg_catalog.string_agg(
                                    pg_catalog.format('constraint %I %s', c.conname,
                                                      pg_catalog.pg_get_constraintdef(c.oid)),
                                    ' ' order by c.conname)
                         from pg_catalog.pg_constraint as c where c.contypid = t.oid))
                    else 'range over ' || (
                        select r.rngsubtype::regtype::text
                        from pg_catalog.pg_range as r where r.rngtypid = t.oid)
                end,
                {_acl("t.typacl")},
                pg_catalog.obj_description(t.oid, 'pg_type'))
        from pg_catalog.pg_type as t
        inner join pg_catalog.pg_namespace as n on n.oid = t.typnamespace
        left join pg_catalog.pg_class as c on c.oid = t.typrelid
        where n.nspname in {IN_OUR_SCHEMAS}
            and (t.typtype in ('e', 'd', 'r') or (t.typtype = 'c' and c.relkind = 'c'))
            and {_not_extension("t.oid", "pg_type")}
        """
    ):
        yield f"type {name}", str(text)


def _extensions_and_jobs(conn: Conn) -> Iterable[tuple[str, str]]:
    for name, schema in conn.execute(
        "select e.extname, e.extnamespace::regnamespace::text from pg_catalog.pg_extension as e "
        "where e.extname <> 'plpgsql'"
    ):
        yield f"extension {name}", f"schema: {schema}"
    if conn.execute("select pg_catalog.to_regclass('cron.job') is not null").fetchone() == (True,):
        for name, text in conn.execute(
            "select j.jobname, pg_catalog.format(E'schedule: %s\\ncommand: %s\\nactive: %s', "
            "j.schedule, j.command, j.active) from cron.job as j "
            "where j.database = pg_catalog.current_database()"
        ):
            yield f"cron job {name}", str(text)


def _rows(conn: Conn) -> Iterable[tuple[str, str]]:
    for table in SCHEMA_ROWS:
        if conn.execute("select pg_catalog.to_regclass(%s)", (table,)).fetchone() == (None,):
            continue
        rows = conn.execute(
            f"select pg_catalog.jsonb_pretty(pg_catalog.to_jsonb(t) - %s::text[]) "
            f"from {table} as t order by 1",
            (list(ROW_TIMESTAMPS),),
        ).fetchall()
        yield f"rows {table}", "\n".join(str(r[0]) for r in rows) or "(no rows)"


def catalog(url: str, rows: bool = True) -> Catalog:
    """Every object of llm-limits in the database at ``url``, as text (see the module doc).

    ``rows`` adds the contents of the tables whose rows the schema defines (SCHEMA_ROWS):
    right for a fresh database, wrong for one an operator has configured.
    """
    entries: Catalog = {}
    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
        # Names print schema-qualified whatever the database's own search_path is.
        conn.execute("set search_path = pg_catalog")
        readers = [_schemas, _types, _relations, _sequences, _functions, _extensions_and_jobs]
        if rows:
            readers.append(_rows)
        for reader in readers:
            for key, text in reader(conn):
                entries[key] = text
    return entries


def render(entries: Catalog) -> str:
    """A catalog as one text, object by object (for ``catalog`` and for saving a check)."""
    return "".join(f"== {key}\n{entries[key]}\n\n" for key in sorted(entries))


def differences(
    want: Catalog, got: Catalog, want_label: str = "want", got_label: str = "got"
) -> list[str]:
    """One readable paragraph per object that differs: its name, what differs, and the text.

    An object on one side only is printed whole; an object on both sides with different
    definitions is printed as a unified diff of its two definitions (``want_label`` lines
    start with ``-``, ``got_label`` lines with ``+``).
    """
    report: list[str] = []
    for key in sorted(want.keys() | got.keys()):
        if key not in got:
            body = _indent(want[key])
            report.append(f"{key}: only in {want_label}\n{body}")
        elif key not in want:
            body = _indent(got[key])
            report.append(f"{key}: only in {got_label}\n{body}")
        elif want[key] != got[key]:
            diff = difflib.unified_diff(
                want[key].splitlines(),
                got[key].splitlines(),
                f"{key} ({want_label})",
                f"{key} ({got_label})",
                n=5,
                lineterm="",
            )
            report.append(f"{key}: differs\n" + _indent("\n".join(diff)))
    return report


def _indent(text: str) -> str:
    return "\n".join("    " + line if line else "" for line in text.splitlines())


# -- the whole check, outside pytest -----------------------------------------------------------


def check(admin_url: str, project_dir: Path) -> list[str]:
    """Build a database from the schema files and one from the migrations; their differences."""
    suffix = uuid.uuid4().hex[:8]
    names = {"schemas": f"schemas_{suffix}", "migrations": f"migrations_{suffix}"}
    urls = {k: admin_url.rsplit("/", 1)[0] + "/" + v for k, v in names.items()}
    for name in names.values():
        localstack.psql(admin_url, f'create database "{name}"')
    try:
        for url in urls.values():
            localstack.bootstrap(url)
        build(urls["schemas"], project_dir)
        localstack.push(urls["migrations"], project_dir)
        return differences(
            catalog(urls["schemas"]),
            catalog(urls["migrations"]),
            "supabase/schemas",
            "supabase/migrations",
        )
    finally:
        for name in names.values():
            localstack.psql(admin_url, f'drop database if exists "{name}" with (force)')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llm_limits.testing.schemas")
    sub = parser.add_subparsers(dest="action", required=True)
    b = sub.add_parser("build", help="apply supabase/schemas to a bootstrapped database")
    b.add_argument("url")
    c = sub.add_parser("catalog", help="print a database's catalog, object by object")
    c.add_argument("url")
    c.add_argument("--no-rows", action="store_true", help="leave out SCHEMA_ROWS")
    k = sub.add_parser("check", help="compare schema files and migrations on scratch databases")
    k.add_argument("--admin-url", required=True)
    for p in (b, k):
        p.add_argument("--project", type=Path, default=Path.cwd())
    args = parser.parse_args(argv)
    try:
        if args.action == "build":
            build(args.url, args.project)
        elif args.action == "catalog":
            print(render(catalog(args.url, rows=not args.no_rows)), end="")
        else:
            report = check(args.admin_url, args.project)
            if report:
                print(f"{len(report)} objects differ:\n\n" + "\n\n".join(report))
                return 1
            print("supabase/schemas and supabase/migrations build the same catalog")
    except (SchemaBuildError, localstack.LocalStackError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
