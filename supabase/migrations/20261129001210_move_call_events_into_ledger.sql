-- One record per call instead of three.
--
-- A settled call used to cost a ledger row plus a `granted` and a settlement
-- audit row (about 960 bytes in all), and a refusal loop wrote one audit row
-- per refusal. Now:
--   * the ledger row IS the record of its grant and of its commit or release
--     (new columns: waited_ms, and details for a release's reason and for the
--     audit rows moved here from before this migration);
--   * refusals fold: one google_ai_refusals row stands for repeated refusals
--     of one caller, model, key set and reason (see record_acquire_verdict);
--   * everything else (429s, expiries, config changes, disabled keys) is
--     still appended to the audit table, renamed google_ai_audit_records;
--   * the view google_ai_audit_log presents all of it as one event stream with
--     the columns the audit table had, so readers (`llm-limits audit`,
--     dashboards) see every event as before.
-- The commit's UPDATE of the ledger row touches no indexed column (the
-- partial index on open leases is gone) and the table keeps room on each page
-- (fillfactor), so the update stays on its page (HOT) and writes no index.

-- Ledger ------------------------------------------------------------------------------------

alter table public.google_ai_reservations
add column waited_ms integer check (waited_ms >= 0),
add column details jsonb;

comment on column public.google_ai_reservations.waited_ms is
'How long acquire() ran before this grant (ms): the WAIT time.';
comment on column public.google_ai_reservations.details is
'Null for most rows. A release''s reason and previous status under "released"; audit rows written before the ledger became the call record, moved here under their event name.';

-- Maintenance finds open leases with a scan of the (retention-bounded)
-- ledger every few minutes; the partial index made every commit a non-HOT
-- update (its predicate reads status) that wrote all indexes again.
drop index public.google_ai_reservations_open_idx;

-- Room for the commit's new row version on the same page.
alter table public.google_ai_reservations set (fillfactor = 85);

-- Audit records -----------------------------------------------------------------------------

alter table public.google_ai_audit_log rename to google_ai_audit_records;
alter sequence public.google_ai_audit_log_id_seq rename to google_ai_audit_records_id_seq;
alter index public.google_ai_audit_log_pkey rename to google_ai_audit_records_pkey;
alter index public.google_ai_audit_log_ts_idx rename to google_ai_audit_records_ts_idx;
alter table public.google_ai_audit_records
rename constraint google_ai_audit_log_event_check to google_ai_audit_records_event_check;
alter trigger google_ai_audit_log_append_only on public.google_ai_audit_records
rename to google_ai_audit_records_append_only;

comment on table public.google_ai_audit_records is
'Append-only audit rows of 429s, lease expiries, configuration changes and disabled keys (and of grants, settlements and refusals written before the ledger became the call record). Read the full event stream from the view google_ai_audit_log.';

-- Folded refusals ---------------------------------------------------------------------------

create table public.google_ai_refusals (
    -- Shares the audit records' sequence: ids are unique across the stream.
    id bigint primary key default pg_catalog.nextval('public.google_ai_audit_records_id_seq'),
    fold_key bigint not null,
    first_at timestamptz not null,
    last_at timestamptz not null,
    refusals integer not null default 1 check (refusals >= 1),
    model text not null,
    key_alias text,
    key_set text [],
    reason text,
    caller text,
    request_id text,
    mode text,
    tokens integer,
    max_wait_ms integer,
    waited_ms integer,
    rounds integer,
    retry_after_ms integer
)
-- Each folded refusal updates its row in place (count, last time): keep room
-- on the page so those updates stay HOT.
with (fillfactor = 50);

-- The open fold of a (caller, model, key set, reason) is its newest row.
create index google_ai_refusals_fold_idx on public.google_ai_refusals (fold_key, first_at);
create index google_ai_refusals_first_at_idx on public.google_ai_refusals using brin (first_at);

comment on table public.google_ai_refusals is
'Refusals of acquire(), folded: one row stands for `refusals` refusals of one caller, model, key set and reason, each within refusal_fold_ms of the previous, from first_at to last_at.';

alter table public.google_ai_refusals enable row level security;
revoke all on table public.google_ai_refusals from public, anon, authenticated, service_role;
grant select on table public.google_ai_refusals to service_role;

-- Settings ----------------------------------------------------------------------------------

alter table public.google_ai_settings
add column refusal_fold_ms integer not null default 1000
check (refusal_fold_ms between 0 and 1000),
add column rollup_retention interval not null default interval '30 days';

comment on column public.google_ai_settings.refusal_fold_ms is
'Refusals of one caller, model, key set and reason that follow each other within this many ms fold into one audit row (0: never fold). A folded row spans at most one window.';
comment on column public.google_ai_settings.rollup_retention is
'How long run_maintenance() keeps per-minute rollups (google_ai_usage_counters, bucket_kind minute); per-day rollups and google_ai_event_counts are kept.';

-- Move the per-call audit rows of live ledger rows into the ledger -------------------------------

-- Rows of calls whose ledger row was already rolled up stay where they are;
-- the view shows both kinds, so no event is shown twice or lost. Each moved
-- row keeps its id, time and actor (audit_id, audit_ts, actor).
select pg_catalog.set_config('llm_limits.trimming_audit', 'on', true);

with moved as (
    delete from public.google_ai_audit_records as a
    using public.google_ai_reservations as r
    where a.reservation_id = r.id and a.event in ('granted', 'committed', 'released')
    returning a.*
),

by_reservation as (
    select
        m.reservation_id,
        pg_catalog.jsonb_object_agg(
            m.event,
            m.details || pg_catalog.jsonb_build_object(
                'audit_id', m.id, 'audit_ts', m.ts, 'actor', m.actor
            )
        ) as moved_rows
    from moved as m
    group by m.reservation_id
)

update public.google_ai_reservations as r
set details = coalesce(r.details, '{}'::jsonb) || b.moved_rows
from by_reservation as b
where r.id = b.reservation_id;

select pg_catalog.set_config('llm_limits.trimming_audit', 'off', true);

-- The event stream --------------------------------------------------------------------------

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
        'key_set', f.key_set
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
        'request_id', r.request_id
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
create function google_ai_internal.write_audit_log()
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
