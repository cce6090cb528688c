-- Maintenance keeps the detail tables small without losing count of
-- anything: every event leaves them only through a rollup.
--
--   detail: one ledger row per call, its grant and settlement (kept
--     ledger_retention, default 7 days); folded refusals, 429s, expiries and
--     config changes (kept audit_retention, default 30 days: they are few);
--   google_ai_usage_counters: requests and tokens per key, model and minute
--     (kept rollup_retention, default 30 days) and per quota day (kept);
--   google_ai_event_counts: every event per UTC day, key and model (kept).

/*
 * maintenance_lock_key: the advisory lock that lets one run_maintenance()
 * run at a time: a fixed class of llm-limits and the function's name.
 *
 * Returns class_id and obj_id, for pg_try_advisory_xact_lock(integer, integer).
 * Raises nothing.
 * Example: select * from google_ai_internal.maintenance_lock_key();
 */
create or replace function google_ai_internal.maintenance_lock_key(
    out class_id integer,
    out obj_id integer
)
language plpgsql
immutable
set search_path = ''
as $$
begin
    class_id := 1819045988;
    obj_id := pg_catalog.hashtext('run_maintenance');
end;
$$;

comment on function google_ai_internal.maintenance_lock_key() is
'The advisory key that lets one run_maintenance() run at a time (tried, never waited for).';
revoke all on function google_ai_internal.maintenance_lock_key()
from public, anon, authenticated;

/*
 * count_events: add events into google_ai_event_counts (one upsert per
 * (day, event, key, model)). Parameters: a jsonb array of objects with day,
 * event, key_alias, model, events, tokens. Returns nothing.
 * Example: perform google_ai_internal.count_events(
 *   '[{"day":"2026-03-01","event":"refused","model":"m","events":3,"tokens":0}]');
 */
create or replace function google_ai_internal.count_events(p_rows jsonb)
returns void
language plpgsql
volatile
set search_path = ''
as $$
begin
    insert into public.google_ai_event_counts as c (day, event, key_alias, model, events, tokens)
    select e.day, e.event, e.key_alias, e.model, sum(e.events), sum(coalesce(e.tokens, 0))
    from pg_catalog.jsonb_to_recordset(p_rows) as e (
        day date, event text, key_alias text, model text, events bigint, tokens bigint
    )
    group by 1, 2, 3, 4
    on conflict (day, event, key_alias, model) do update
    set events = c.events + excluded.events,
        tokens = c.tokens + excluded.tokens,
        updated_at = pg_catalog.now();
end;
$$;

revoke all on function google_ai_internal.count_events(jsonb) from public, anon, authenticated;

/*
 * expire_leases: step 1 of run_maintenance: reservations still `reserved`
 * after their lease become `expired` (audited); they stay counted in their
 * windows.
 *
 * Parameters: p_now, the run's start.
 * Returns how many expired. Raises nothing.
 * Example: select google_ai_internal.expire_leases(now());
 */
create or replace function google_ai_internal.expire_leases(p_now timestamptz)
returns integer
language sql
volatile
set search_path = ''
as $$
    with gone as (
        update public.google_ai_reservations as r
        set status = 'expired', settled_at = p_now
        where r.status = 'reserved' and r.lease_until <= p_now
        returning r.*
    ),
    audited as (
        insert into public.google_ai_audit_records (ts, event, key_alias, model, reservation_id, details)
        select p_now, 'expired', g.key_alias, g.model, g.id,
               pg_catalog.jsonb_build_object('lease_until', g.lease_until, 'granted_at', g.granted_at,
                                             'still_counted', true)
        from gone as g
        returning 1
    )
    select count(*)::integer from audited
$$;

revoke all on function google_ai_internal.expire_leases(timestamptz) from public, anon, authenticated;

/*
 * roll_up_ledger: step 2 of run_maintenance: settled ledger rows granted
 * before p_cutoff are added into google_ai_usage_counters per key, model and
 * minute/day (minute in UTC, day in rpd_time_zone), their grant and
 * settlement events into google_ai_event_counts, then deleted.
 *
 * Parameters: p_cutoff; p_cfg; p_now, the run's start.
 * Returns how many ledger rows were rolled up. Raises nothing.
 * Example: select google_ai_internal.roll_up_ledger(now() - interval '7 days', cfg, now());
 */
create or replace function google_ai_internal.roll_up_ledger(
    p_cutoff timestamptz, p_cfg public.google_ai_settings, p_now timestamptz
)
returns integer
language plpgsql
volatile
set search_path = ''
as $$
declare
    rolled integer;
    counted jsonb;
begin
    with old_rows as (
        delete from public.google_ai_reservations as r
        where r.granted_at < p_cutoff and r.status <> 'reserved'
        returning r.*
    ),
    buckets as (
        select 'minute' as kind, o.key_alias, o.model,
               pg_catalog.date_trunc('minute', o.granted_at) as bucket_start,
               sum(o.counted_requests) as requests, sum(o.counted_tokens) as tokens
        from old_rows as o group by 2, 3, 4
        union all
        select 'day', o.key_alias, o.model,
               (o.rpd_day::timestamp at time zone p_cfg.rpd_time_zone),
               sum(o.counted_requests), sum(o.counted_tokens)
        from old_rows as o group by 2, 3, 4
    ),
    rolled as (
        insert into public.google_ai_usage_counters as c (
            api_key_id, key_alias, model, bucket_kind, bucket_start, rpm_used, tpm_used, rpd_used,
            updated_at
        )
        select
            (select k.id from public.google_ai_api_keys as k where k.key_alias = b.key_alias),
            b.key_alias, b.model, b.kind, b.bucket_start,
            case when b.kind = 'minute' then least(b.requests, 2147483647) else 0 end,
            least(b.tokens, 2147483647),
            case when b.kind = 'day' then least(b.requests, 2147483647) else 0 end,
            p_now
        from buckets as b
        on conflict (bucket_kind, key_alias, model, bucket_start) do update
        set rpm_used = least(c.rpm_used::bigint + excluded.rpm_used, 2147483647),
            tpm_used = least(c.tpm_used::bigint + excluded.tpm_used, 2147483647),
            rpd_used = least(c.rpd_used::bigint + excluded.rpd_used, 2147483647),
            updated_at = excluded.updated_at
        returning 1
    ),
    -- The ledger row is the record of its grant and of its settlement.
    events as (
        select e.day, e.event, e.key_alias, e.model, count(*) as events, sum(e.tokens) as tokens
        from (
            select (o.granted_at at time zone 'UTC')::date as day, 'granted' as event,
                   o.key_alias, o.model, o.counted_tokens as tokens
            from old_rows as o
            union all
            select (coalesce(o.settled_at, o.granted_at) at time zone 'UTC')::date, o.status,
                   o.key_alias, o.model, 0
            from old_rows as o
            where o.status in ('committed', 'released')
        ) as e
        group by 1, 2, 3, 4
    )
    -- Grouped before they become jsonb: one element per day, event, key and model.
    select
        (select count(*)::integer from old_rows),
        (select coalesce(pg_catalog.jsonb_agg(pg_catalog.to_jsonb(e.*)), '[]'::jsonb) from events as e)
    into rolled, counted;
    perform google_ai_internal.count_events(counted);
    return rolled;
end;
$$;

revoke all on function google_ai_internal.roll_up_ledger(
    timestamptz, public.google_ai_settings, timestamptz
) from public, anon, authenticated;

/*
 * trim_audit: step 3 of run_maintenance: audit records and folded refusals
 * older than p_cutoff are counted into google_ai_event_counts, then
 * deleted.
 *
 * Parameters: p_cutoff.
 * Returns the audit records and the refusal rows deleted. Raises nothing.
 * Example: select * from google_ai_internal.trim_audit(now() - interval '30 days');
 */
create or replace function google_ai_internal.trim_audit(
    p_cutoff timestamptz, out records integer, out refusals integer
)
language plpgsql
volatile
set search_path = ''
as $$
declare
    counted jsonb;
begin
    -- The append-only trigger lets this transaction's deletes through.
    perform pg_catalog.set_config('llm_limits.trimming_audit', 'on', true);
    with old_records as (
        delete from public.google_ai_audit_records as a where a.ts < p_cutoff
        returning a.ts, a.event, a.key_alias, a.model
    ),
    grouped as (
        select (o.ts at time zone 'UTC')::date as day, o.event, o.key_alias, o.model,
               count(*) as events
        from old_records as o
        group by 1, 2, 3, 4
    )
    select
        (select count(*)::integer from old_records),
        (select coalesce(pg_catalog.jsonb_agg(pg_catalog.to_jsonb(g.*)), '[]'::jsonb) from grouped as g)
    into records, counted;
    perform pg_catalog.set_config('llm_limits.trimming_audit', 'off', true);
    perform google_ai_internal.count_events(counted);

    with old_folds as (
        delete from public.google_ai_refusals as f where f.last_at < p_cutoff
        returning f.first_at, f.key_alias, f.model, f.refusals
    ),
    grouped as (
        select (o.first_at at time zone 'UTC')::date as day, 'refused' as event, o.key_alias,
               o.model, sum(o.refusals) as events
        from old_folds as o
        group by 1, 2, 3, 4
    )
    select
        (select count(*)::integer from old_folds),
        (select coalesce(pg_catalog.jsonb_agg(pg_catalog.to_jsonb(g.*)), '[]'::jsonb) from grouped as g)
    into refusals, counted;
    perform google_ai_internal.count_events(counted);
end;
$$;

revoke all on function google_ai_internal.trim_audit(timestamptz) from public, anon, authenticated;

/*
 * log_maintenance: the google_ai_maintenance_log row of a run, built through
 * jsonb_populate_record so that the legacy column types of this adopted
 * table (text or text[], json or jsonb) are whatever they are.
 *
 * Parameters: p_started; p_deleted (rows deleted in all); p_details.
 * Returns the row as jsonb. Raises nothing.
 * Example: select google_ai_internal.log_maintenance(now(), 0, '{}');
 */
create or replace function google_ai_internal.log_maintenance(
    p_started timestamptz, p_deleted integer, p_details jsonb
)
returns jsonb
language sql
volatile
set search_path = ''
as $$
    insert into public.google_ai_maintenance_log (
        operation, tables_affected, deleted_count, started_at, completed_at, status, details
    )
    select
        p.operation, p.tables_affected, p.deleted_count, p.started_at, p.completed_at,
        p.status, p.details
    from pg_catalog.jsonb_populate_record(
        null::public.google_ai_maintenance_log,
        pg_catalog.jsonb_build_object(
            'operation', 'run_maintenance',
            'tables_affected', pg_catalog.to_jsonb(array[
                'google_ai_reservations', 'google_ai_usage_counters', 'google_ai_audit_records',
                'google_ai_refusals', 'google_ai_event_counts', 'google_ai_quota_state',
                'google_ai_maintenance_log'
            ]),
            'deleted_count', p_deleted,
            'started_at', p_started,
            'completed_at', google_ai_internal.clock(),
            'status', 'ok',
            'details', p_details
        )
    ) as p
    returning pg_catalog.to_jsonb(google_ai_maintenance_log.*)
$$;

revoke all on function google_ai_internal.log_maintenance(timestamptz, integer, jsonb)
from public, anon, authenticated;

/*
 * run_maintenance: one maintenance pass; safe to run concurrently with itself
 * (one run wins, the others return {"status": "skipped"} at once) and with
 * live traffic (it never deletes a ledger row inside a live window).
 *
 *   1. leases: reservations still `reserved` after lease_until become
 *      `expired` (audited); they stay counted in their windows.
 *   2. ledger: settled rows older than ledger_retention are added into
 *      google_ai_usage_counters per key, model and minute/day (minute in
 *      UTC, day in rpd_time_zone) and their grant and settlement events into
 *      google_ai_event_counts, then deleted.
 *   3. audit: records and folded refusals older than audit_retention are
 *      counted into google_ai_event_counts, then deleted; maintenance log rows
 *      of that age are deleted.
 *   4. rollups: per-minute counters older than rollup_retention are deleted
 *      (the per-day counters keep their totals); end users' day rows
 *      (google_ai_end_user_usage) of days the ledger no longer holds are
 *      deleted (their grants are rolled up with the ledger's).
 *
 * Writes one google_ai_maintenance_log row and returns it as jsonb.
 * Raises nothing of its own.
 * Example: select public.run_maintenance();
 */
create or replace function public.run_maintenance()
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    cfg public.google_ai_settings := google_ai_internal.settings();
    started timestamptz := google_ai_internal.clock();
    ledger_cutoff timestamptz;
    audit_cutoff timestamptz;
    rollup_cutoff timestamptz;
    expired_count integer;
    rolled_count integer;
    trimmed record;
    minute_count integer;
    log_count integer;
    state_count integer;
    person_count integer;
begin
    if not (
        select pg_catalog.pg_try_advisory_xact_lock(k.class_id, k.obj_id)
        from google_ai_internal.maintenance_lock_key() as k
    ) then
        return pg_catalog.jsonb_build_object('status', 'skipped',
                                             'reason', 'another run_maintenance() is in progress');
    end if;
    -- Never delete a row that a window could still count.
    ledger_cutoff := started - greatest(
        cfg.ledger_retention, google_ai_internal.window_hold(cfg), interval '2 days'
    );
    audit_cutoff := started - cfg.audit_retention;
    rollup_cutoff := started - greatest(cfg.rollup_retention, cfg.ledger_retention);

    expired_count := google_ai_internal.expire_leases(started);
    rolled_count := google_ai_internal.roll_up_ledger(ledger_cutoff, cfg, started);
    -- A window row idle for longer than the retention may point at ledger
    -- rows just deleted; drop it, the next acquire rebuilds it from the ledger.
    delete from public.google_ai_quota_state as s
    where s.swept_to < ledger_cutoff and (s.cooldown_until is null or s.cooldown_until < started);
    get diagnostics state_count = row_count;
    trimmed := google_ai_internal.trim_audit(audit_cutoff);
    delete from public.google_ai_usage_counters as c
    where c.bucket_kind = 'minute' and c.bucket_start < rollup_cutoff;
    get diagnostics minute_count = row_count;
    delete from public.google_ai_end_user_usage as u
    where u.day < (ledger_cutoff at time zone cfg.rpd_time_zone)::date;
    get diagnostics person_count = row_count;
    delete from public.google_ai_maintenance_log as m where m.started_at < audit_cutoff;
    get diagnostics log_count = row_count;

    return google_ai_internal.log_maintenance(
        started,
        rolled_count + trimmed.records + trimmed.refusals + minute_count + log_count + state_count
        + person_count,
        pg_catalog.jsonb_build_object(
            'leases_expired', expired_count,
            'ledger_rows_rolled_up', rolled_count,
            'audit_rows_deleted', trimmed.records,
            'refusal_rows_deleted', trimmed.refusals,
            'minute_rollups_deleted', minute_count,
            'maintenance_rows_deleted', log_count,
            'window_rows_dropped', state_count,
            'end_user_days_deleted', person_count,
            'ledger_cutoff', ledger_cutoff,
            'audit_cutoff', audit_cutoff,
            'rollup_cutoff', rollup_cutoff
        )
    );
end;
$$;

comment on function public.run_maintenance() is
'Expire leases, roll old ledger rows, audit records and folded refusals up into google_ai_usage_counters and google_ai_event_counts, trim per-minute rollups; one google_ai_maintenance_log row per run. Concurrent runs: one wins, the rest return {"status":"skipped"}.';
revoke all on function public.run_maintenance() from public, anon, authenticated;
grant execute on function public.run_maintenance() to service_role;
