-- The audit records are append-only: rows are never edited, and only
-- run_maintenance() trims old ones (after counting them into
-- google_ai_event_counts). The same applies to the trimming flag
-- (llm_limits.trimming_audit) as to the clock's settings: any session can
-- set it, so the guard also requires the table's owner as the current user,
-- which only the owner's own sessions and our SECURITY DEFINER functions are.

/*
 * guard_audit_log: keeps the audit log append-only. Deletes pass only inside
 * run_maintenance()'s trimming (a transaction-local flag) AND when the current
 * user owns the table, so a session that merely sets the flag gains nothing.
 * Raises LL010 otherwise. Trigger function; example: see run_maintenance().
 */
create or replace function google_ai_internal.guard_audit_log()
returns trigger
language plpgsql
volatile
set search_path = ''
as $$
begin
    if tg_op = 'DELETE'
       and coalesce(pg_catalog.current_setting('llm_limits.trimming_audit', true), '') = 'on'
       and pg_catalog.pg_has_role(
           current_user,
           (select c.relowner from pg_catalog.pg_class as c where c.oid = tg_relid),
           'USAGE'
       ) then
        return old;
    end if;
    raise exception using
        errcode = 'LL010',
        message = pg_catalog.format('%s is append-only', tg_table_name),
        hint = 'Old rows are trimmed by public.run_maintenance().';
end;
$$;

revoke all on function google_ai_internal.guard_audit_log() from public, anon, authenticated;

create trigger google_ai_audit_records_append_only
before update or delete on public.google_ai_audit_records
for each row execute function google_ai_internal.guard_audit_log();
