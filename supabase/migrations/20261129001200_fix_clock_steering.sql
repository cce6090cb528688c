-- Only the owner decides what time the RPCs see.
--
-- Custom settings such as llm_limits.now and llm_limits.clock_skew can be set
-- by any session (`set llm_limits.clock_skew = '2 minutes'`), so a clock that
-- honours them takes the time from its caller: one SET by service_role or by
-- llm_limits_client moved every window forward and granted past the limit.
-- The settings now steer only while an owner-only switch is on: one row of
-- google_ai_internal.clock_switch, a table no role but the owner can read or
-- write. Migrations leave it off; a test database turns it on (see README,
-- "Steering the clock in tests").
--
-- The same applies to the audit log's trimming flag (llm_limits.trimming_audit):
-- a session that sets it could delete audit rows if it held DELETE. The guard
-- now also requires the table's owner as the current user, which only the
-- owner's own sessions and our SECURITY DEFINER functions are.

create table google_ai_internal.clock_switch (
    id boolean primary key default true check (id),
    steerable boolean not null default false,
    updated_at timestamptz not null default now()
);

comment on table google_ai_internal.clock_switch is
'Owner-only test switch: while steerable is true, the settings llm_limits.now and llm_limits.clock_skew steer google_ai_internal.clock(). Off in every deployed project.';

insert into google_ai_internal.clock_switch (id) values (true)
on conflict (id) do nothing;

alter table google_ai_internal.clock_switch enable row level security;
revoke all on table google_ai_internal.clock_switch
from public, anon, authenticated, service_role;

-- Flipping the switch is a configuration change like any other.
create trigger google_ai_clock_switch_audit
after insert or update or delete on google_ai_internal.clock_switch
for each row execute function google_ai_internal.audit_config_change();

create trigger google_ai_clock_switch_touch
before update on google_ai_internal.clock_switch
for each row execute function google_ai_internal.touch_updated_at();

/*
 * clock: the one clock every RPC reads.
 *
 * clock_timestamp(), not now(): now() is frozen for the whole transaction and
 * a WAIT loop lives inside one. When a session has set llm_limits.now (a fixed
 * instant) and/or llm_limits.clock_skew (a shift of the real clock), they are
 * honoured only while google_ai_internal.clock_switch.steerable is true; the
 * switch is read only then, so an unsteered call costs what it always did.
 *
 * Parameters: none. Returns the current instant as the RPCs see it.
 * Raises: 22007/22008 when the switch is on and a setting is not a valid
 *         timestamptz/interval (a test's own mistake).
 * Example: select google_ai_internal.clock();
 */
create or replace function google_ai_internal.clock()
returns timestamptz
language plpgsql
volatile
set search_path = ''
as $$
declare
    fixed text := pg_catalog.current_setting('llm_limits.now', true);
    skew text := pg_catalog.current_setting('llm_limits.clock_skew', true);
begin
    if coalesce(fixed, '') = '' and coalesce(skew, '') = '' then
        return pg_catalog.clock_timestamp();
    end if;
    if not coalesce(
        (select c.steerable from google_ai_internal.clock_switch as c where c.id), false
    ) then
        return pg_catalog.clock_timestamp();
    end if;
    return
        coalesce(nullif(fixed, '')::timestamptz, pg_catalog.clock_timestamp())
        + coalesce(nullif(skew, '')::interval, interval '0');
end;
$$;

revoke all on function google_ai_internal.clock() from public, anon, authenticated, service_role;

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
