-- Maintenance keeps the ledger and the audit log small without losing usage
-- history: expired leases are marked, old ledger rows are rolled up into
-- google_ai_usage_counters before they are deleted, old audit rows trimmed.

/*
 * run_maintenance: one maintenance pass; safe to run concurrently with itself
 * (one run wins, the others return {"status": "skipped"} at once) and with
 * live traffic (it never deletes a ledger row inside a live window).
 *
 *   1. leases: reservations still `reserved` after lease_until become
 *      `expired` (audited); they stay counted in their windows.
 *   2. rollup: settled ledger rows older than google_ai_settings.ledger_retention
 *      are added into google_ai_usage_counters per key, model and minute/day
 *      (minute in UTC, day in rpd_time_zone), then deleted.
 *   3. audit: rows older than audit_retention are deleted, and so are
 *      maintenance log rows of that age.
 *
 * Writes one google_ai_maintenance_log row and returns it as jsonb.
 * Example: select public.run_maintenance();
 */
create function public.run_maintenance()
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
    expired_count integer := 0;
    rolled_count integer := 0;
    audit_count integer := 0;
    log_count integer := 0;
    state_count integer := 0;
    log_row jsonb;
    log_tables text [] := array[
        'google_ai_reservations', 'google_ai_usage_counters', 'google_ai_audit_log',
        'google_ai_quota_state', 'google_ai_maintenance_log'
    ];
begin
    if not pg_catalog.pg_try_advisory_xact_lock(1819045988, pg_catalog.hashtext('run_maintenance')) then
        return pg_catalog.jsonb_build_object('status', 'skipped',
                                             'reason', 'another run_maintenance() is in progress');
    end if;
    -- Never delete a row that a window could still count.
    ledger_cutoff := started - greatest(
        cfg.ledger_retention,
        pg_catalog.make_interval(secs => (cfg.window_ms + cfg.window_guard_ms) / 1000.0),
        interval '2 days'
    );
    audit_cutoff := started - cfg.audit_retention;

    with gone as (
        update public.google_ai_reservations as r
        set status = 'expired', settled_at = started
        where r.status = 'reserved' and r.lease_until <= started
        returning r.*
    )
    insert into public.google_ai_audit_log (ts, event, key_alias, model, reservation_id, details)
    select started, 'expired', g.key_alias, g.model, g.id,
           pg_catalog.jsonb_build_object('lease_until', g.lease_until, 'granted_at', g.granted_at,
                                         'still_counted', true)
    from gone as g;
    get diagnostics expired_count = row_count;

    with old_rows as (
        delete from public.google_ai_reservations as r
        where r.granted_at < ledger_cutoff and r.status <> 'reserved'
        returning r.*
    ),
    buckets as (
        select 'minute' as kind, o.key_alias, o.model,
               pg_catalog.date_trunc('minute', o.granted_at) as bucket_start,
               sum(o.counted_requests) as requests, sum(o.counted_tokens) as tokens
        from old_rows as o group by 2, 3, 4
        union all
        select 'day', o.key_alias, o.model,
               (o.rpd_day::timestamp at time zone cfg.rpd_time_zone),
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
        started
    from buckets as b
    on conflict (bucket_kind, key_alias, model, bucket_start) do update
    set rpm_used = least(c.rpm_used::bigint + excluded.rpm_used, 2147483647),
        tpm_used = least(c.tpm_used::bigint + excluded.tpm_used, 2147483647),
        rpd_used = least(c.rpd_used::bigint + excluded.rpd_used, 2147483647),
        updated_at = excluded.updated_at
    returning 1
    )
    select count(*) into rolled_count from old_rows;

    -- A window row idle for longer than the retention may point at ledger
    -- rows just deleted; drop it, the next acquire rebuilds it from the ledger.
    delete from public.google_ai_quota_state as s
    where s.swept_to < ledger_cutoff
      and (s.cooldown_until is null or s.cooldown_until < started);
    get diagnostics state_count = row_count;

    perform pg_catalog.set_config('llm_limits.trimming_audit', 'on', true);
    delete from public.google_ai_audit_log as a where a.ts < audit_cutoff;
    get diagnostics audit_count = row_count;
    perform pg_catalog.set_config('llm_limits.trimming_audit', 'off', true);

    delete from public.google_ai_maintenance_log as m where m.started_at < audit_cutoff;
    get diagnostics log_count = row_count;

    -- Built through jsonb_populate_record so that the legacy column types of
    -- this adopted table (text or text[], json or jsonb) are whatever they are.
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
            'tables_affected', pg_catalog.to_jsonb(log_tables),
            'deleted_count', rolled_count + audit_count + log_count + state_count,
            'started_at', started,
            'completed_at', google_ai_internal.clock(),
            'status', 'ok',
            'details', pg_catalog.jsonb_build_object(
                'leases_expired', expired_count,
                'ledger_rows_rolled_up', rolled_count,
                'audit_rows_deleted', audit_count,
                'maintenance_rows_deleted', log_count,
                'window_rows_dropped', state_count,
                'ledger_cutoff', ledger_cutoff,
                'audit_cutoff', audit_cutoff
            )
        )
    ) as p
    returning pg_catalog.to_jsonb(google_ai_maintenance_log.*) into log_row;
    return log_row;
end;
$$;

comment on function public.run_maintenance() is
'Expire leases, roll old ledger rows up into google_ai_usage_counters, trim the audit log; one google_ai_maintenance_log row per run. Concurrent runs: one wins, the rest return {"status":"skipped"}.';

revoke all on function public.run_maintenance() from public, anon, authenticated;
grant execute on function public.run_maintenance() to service_role;
