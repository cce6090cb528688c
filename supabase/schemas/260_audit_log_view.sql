-- The event stream: one view over the three places events live. The ledger
-- row is the record of its grant and of its commit or release, refusals are
-- folded in google_ai_refusals, and everything else (429s, expiries, config
-- changes, disabled and enabled keys) is appended to google_ai_audit_records.
-- Readers (`llm-limits audit`, dashboards) see every event, one row each,
-- with the columns the audit table always had.

/*
 * google_ai_audit_log: every audit event, one row each, as the audit table
 * used to hold them: grants, commits and releases from the ledger, folded
 * refusals (details.count, first_at, last_at), and the appended records.
 * Ledger events get stable ids derived from the reservation id (negative for
 * the settlement); moved rows keep their original id and time.
 * Example: select * from public.google_ai_audit_log
 *          where ts > now() - interval '1 hour' order by ts;
 */
create view public.google_ai_audit_log with (security_invoker = true) as
select a.id, a.ts, a.event, a.key_alias, a.model, a.reservation_id, a.actor, a.details
from public.google_ai_audit_records as a
union all
select
    f.id,
    f.first_at as ts,
    'refused' as event,
    f.key_alias,
    f.model,
    null::uuid as reservation_id,
    null::text as actor,
    pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
        'count', f.refusals,
        'first_at', f.first_at,
        'last_at', f.last_at,
        'reason', f.reason,
        'retry_after_ms', f.retry_after_ms,
        'tokens', f.tokens,
        'mode', f.mode,
        'max_wait_ms', f.max_wait_ms,
        'waited_ms', f.waited_ms,
        'rounds', f.rounds,
        'caller', f.caller,
        'request_id', f.request_id,
        'key_set', f.key_set,
        -- end_user_label's rule, inline: the view runs as its reader.
        'end_user', pg_catalog.encode(pg_catalog.substr(f.end_user_hash, 1, 4), 'hex')
    )) as details
from public.google_ai_refusals as f
union all
select
    coalesce(
        (r.details #>> '{granted,audit_id}')::bigint,
        ('x' || pg_catalog.substr(pg_catalog.md5(r.id::text), 1, 15))::bit(60)::bigint
    ) as id,
    coalesce((r.details #>> '{granted,audit_ts}')::timestamptz, r.granted_at) as ts,
    'granted' as event,
    r.key_alias,
    r.model,
    r.id as reservation_id,
    r.details #>> '{granted,actor}' as actor,
    pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
        'tokens', r.estimated_tokens,
        'waited_ms', r.waited_ms,
        'quota_group', r.quota_group,
        'caller', r.caller,
        'request_id', r.request_id,
        'end_user', pg_catalog.encode(pg_catalog.substr(r.end_user_hash, 1, 4), 'hex')
    )) || coalesce(r.details -> 'granted', '{}'::jsonb) - '{audit_id,audit_ts,actor}'::text [] as details
from public.google_ai_reservations as r
union all
select
    coalesce(
        (r.details -> r.status ->> 'audit_id')::bigint,
        -('x' || pg_catalog.substr(pg_catalog.md5(r.id::text), 1, 15))::bit(60)::bigint
    ) as id,
    coalesce((r.details -> r.status ->> 'audit_ts')::timestamptz, r.settled_at) as ts,
    r.status as event,
    r.key_alias,
    r.model,
    r.id as reservation_id,
    r.details -> r.status ->> 'actor' as actor,
    case
        when r.status = 'committed' then pg_catalog.jsonb_build_object(
            'estimated_tokens', r.estimated_tokens,
            'prompt_tokens', r.actual_tokens,
            'completion_tokens', r.completion_tokens,
            'late', r.settled_at > r.lease_until
        )
        else pg_catalog.jsonb_build_object(
            'sent', r.counted_requests > 0,
            'refunded', r.counted_requests = 0
        )
    end || coalesce(r.details -> r.status, '{}'::jsonb) - '{audit_id,audit_ts,actor}'::text [] as details
from public.google_ai_reservations as r
where r.status in ('committed', 'released');

comment on view public.google_ai_audit_log is
'Every audit event: grants, commits and releases (from the ledger), folded refusals (details.count, first_at, last_at), 429s, expiries, config changes and disabled keys. Append-only.';

revoke all on table public.google_ai_audit_log from public, anon, authenticated, service_role;
grant select on table public.google_ai_audit_log to service_role;

/*
 * write_audit_log: the view's INSTEAD OF trigger. An insert is appended to
 * google_ai_audit_records (so code that still writes the audit log keeps
 * working); an update or delete raises LL010, as the table did.
 * Trigger function; example: insert into public.google_ai_audit_log (event, details)
 *                            values ('config_changed', '{}');
 */
create or replace function google_ai_internal.write_audit_log()
returns trigger
language plpgsql
volatile
set search_path = ''
as $$
begin
    if tg_op <> 'INSERT' then
        raise exception using
            errcode = 'LL010',
            message = 'google_ai_audit_log is append-only',
            hint = 'Old rows are trimmed by public.run_maintenance().';
    end if;
    insert into public.google_ai_audit_records (ts, event, key_alias, model, reservation_id, actor, details)
    values (
        coalesce(new.ts, google_ai_internal.clock()),
        new.event,
        new.key_alias,
        new.model,
        new.reservation_id,
        coalesce(new.actor, session_user),
        coalesce(new.details, '{}'::jsonb)
    )
    returning id into new.id;
    return new;
end;
$$;

revoke all on function google_ai_internal.write_audit_log() from public, anon, authenticated;

create trigger google_ai_audit_log_write
instead of insert or update or delete on public.google_ai_audit_log
for each row execute function google_ai_internal.write_audit_log();
