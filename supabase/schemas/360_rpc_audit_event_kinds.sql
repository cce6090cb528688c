-- The events the audit stream can hold, for the CLI, read back from the
-- check constraint that defines them (080_table_google_ai_audit_records.sql).

/*
 * audit_event_kinds: the event names google_ai_audit_log can show, in the
 * order of google_ai_audit_records' event check, which defines them (the
 * view's other sources, the ledger and the folded refusals, produce a subset
 * of them).
 *
 * Returns one row per event name. Raises nothing.
 * Example: select * from public.audit_event_kinds();
 */
create or replace function public.audit_event_kinds()
returns setof text
language sql
stable
security definer
set search_path = ''
as $$
    select m.kind[1]
    from pg_catalog.pg_constraint as c
    cross join lateral pg_catalog.regexp_matches(
        pg_catalog.pg_get_constraintdef(c.oid), '''([a-z_]+)''', 'g'
    ) with ordinality as m (kind, n)
    where
        c.conrelid = 'public.google_ai_audit_records'::regclass
        and c.conname = 'google_ai_audit_records_event_check'
    order by m.n
$$;

comment on function public.audit_event_kinds() is
'The event names the audit stream (google_ai_audit_log) can hold, as its check constraint defines them.';
revoke all on function public.audit_event_kinds() from public, anon, authenticated;
grant execute on function public.audit_event_kinds() to service_role;
