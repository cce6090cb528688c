-- How many callers wait on a model gets a function of its own, so that the
-- way waiters queue can change without redefining quota_status.

/*
 * queue_waiters: callers inside a WAIT on this model (all groups), the head
 * of each queue plus those queued behind it.
 *
 * Parameters: p_model, a google_ai_model_limits.model name.
 * Returns the count (0 when nobody waits). Raises nothing.
 * Example: select google_ai_internal.queue_waiters('gemma-3-27b');
 */
create function google_ai_internal.queue_waiters(p_model text)
returns integer
language sql
stable
set search_path = ''
as $$
    -- acquire queues on the advisory lock (hashtext('llm_limits:' || model), key set).
    select count(*)::integer
    from pg_catalog.pg_locks as pl
    where
        pl.locktype = 'advisory'
        and pl.objsubid = 2
        and pl.classid::bigint = (
            pg_catalog.hashtext('llm_limits:' || p_model)::bigint & 4294967295
        )
$$;

revoke all on function google_ai_internal.queue_waiters(text) from public, anon, authenticated;

/*
 * quota_status: what the pool looks like right now, one row per quota group
 * and model, for `llm-limits status` and dashboards.
 *
 * Usage is recomputed from the ledger over the live windows (not read from
 * the running totals), so it is exact even for a group nobody touched for a
 * while. `waiters` counts callers inside a WAIT on this model (all groups):
 * the head of each queue plus those queued behind it.
 *
 * Example: select * from public.quota_status() where model = 'gemma-3-27b';
 */
create or replace function public.quota_status()
returns table (
    quota_group text,
    model text,
    api_model text,
    key_aliases text [],
    rpm_used integer,
    rpm_limit integer,
    tpm_used bigint,
    tpm_limit integer,
    rpd_used integer,
    rpd_limit integer,
    cooldown_until timestamptz,
    cooldown_reason text,
    next_rpd_reset timestamptz,
    in_flight integer,
    waiters integer
)
language plpgsql
stable
security definer
set search_path = ''
-- Its tables are tiny and seldom analyzed; default estimates cost the plan
-- above the JIT thresholds, and compiling it took ~0.5 s a call.
set jit = off
as $$
declare
    cfg public.google_ai_settings := google_ai_internal.settings();
    at_now timestamptz := google_ai_internal.clock();
    horizon timestamptz := at_now - pg_catalog.make_interval(
        secs => (cfg.window_ms + cfg.window_guard_ms) / 1000.0
    );
    today date := (at_now at time zone cfg.rpd_time_zone)::date;
begin
    return query
    with groups as (
        select
            coalesce(k.quota_group, k.key_alias) as grp,
            array_agg(k.key_alias order by k.priority, k.key_alias) as aliases
        from public.google_ai_api_keys as k
        where k.is_active is true
        group by 1
    )
    select
        g.grp,
        m.model,
        coalesce(m.api_model, m.model),
        g.aliases,
        coalesce(u.rpm_used, 0)::integer,
        coalesce(o.rpm, m.rpm::integer),
        coalesce(u.tpm_used, 0)::bigint,
        coalesce(o.tpm, m.tpm::integer),
        coalesce(u.rpd_used, 0)::integer,
        coalesce(o.rpd, m.rpd::integer),
        case when s.cooldown_until > at_now then s.cooldown_until end,
        case when s.cooldown_until > at_now then s.cooldown_reason end,
        google_ai_internal.next_day_start(at_now, cfg.rpd_time_zone),
        coalesce(u.in_flight, 0)::integer,
        google_ai_internal.queue_waiters(m.model)
    from groups as g
    cross join public.google_ai_model_limits as m
    left join public.google_ai_group_limits as o
        on o.quota_group = g.grp and o.model = m.model
    left join public.google_ai_quota_state as s
        on s.quota_group = g.grp and s.model = m.model
    left join lateral (
        select
            sum(r.counted_requests) filter (where r.granted_at > horizon) as rpm_used,
            sum(r.counted_tokens) filter (where r.granted_at > horizon) as tpm_used,
            sum(r.counted_requests) filter (where r.rpd_day = today) as rpd_used,
            count(*) filter (where r.status = 'reserved') as in_flight
        from public.google_ai_reservations as r
        where
            r.quota_group = g.grp and r.model = m.model
            and (r.granted_at > horizon or r.rpd_day = today or r.status = 'reserved')
    ) as u on true
    order by g.grp, m.model;
end;
$$;

comment on function public.quota_status() is
'Live usage per quota group and model: RPM/TPM over the sliding window, RPD for the Pacific day, cooldown, next reset, in-flight reservations and waiters.';

