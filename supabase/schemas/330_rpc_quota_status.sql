-- What the pool looks like right now (`llm-limits status`, dashboards),
-- and how close the client's token estimates came to Google's counts.

/*
 * estimate_accuracy: how close admission estimates came to Google's counts
 * for one quota group and model over the live window (committed calls only,
 * whose actual count is known and positive).
 *
 * Parameters: p_group, p_model (google_ai_model_limits.model), p_since (the
 * window's start: reservations granted after it count).
 * Returns (compared, ratio_p50, ratio_max) of estimated_tokens /
 * actual_tokens; ratios are null when nothing was compared. Raises nothing.
 * Example: select * from google_ai_internal.estimate_accuracy('k1', 'gemma-3-27b', now() - interval '61 s');
 */
create or replace function google_ai_internal.estimate_accuracy(
    p_group text, p_model text, p_since timestamptz
)
returns table (compared integer, ratio_p50 numeric, ratio_max numeric)
language sql
stable
set search_path = ''
as $$
    select
        count(*)::integer,
        round(
            (percentile_cont(0.5) within group (
                order by r.estimated_tokens::float8 / r.actual_tokens
            ))::numeric,
            3
        ),
        round(max(r.estimated_tokens::numeric / r.actual_tokens), 3)
    from public.google_ai_reservations as r
    where
        r.quota_group = p_group
        and r.model = p_model
        and r.granted_at > p_since
        and r.status = 'committed'
        and r.actual_tokens > 0
$$;

revoke all on function google_ai_internal.estimate_accuracy(
    text, text, timestamptz
) from public, anon, authenticated;

/*
 * quota_status: what the pool looks like right now, one row per quota group
 * and model, for `llm-limits status` and dashboards.
 *
 * Usage is recomputed from the ledger over the live windows (not read from
 * the running totals), so it is exact even for a group nobody touched for a
 * while. `waiters` counts callers inside a WAIT on this model (all groups):
 * the head of each queue plus those queued behind it. `token_counter` is the
 * model's configured counter (null = automatic); `estimates_compared`,
 * `estimate_ratio_p50` and `estimate_ratio_max` compare each committed
 * call's admission estimate with Google's count over the live window (1.0 is
 * exact; above 1 holds TPM that was never charged; below 1 would under-count).
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
    waiters integer,
    token_counter text,
    estimates_compared integer,
    estimate_ratio_p50 numeric,
    estimate_ratio_max numeric
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
    horizon timestamptz := at_now - google_ai_internal.window_hold(cfg);
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
        google_ai_internal.queue_waiters(m.model),
        m.token_counter,
        a.compared,
        a.ratio_p50,
        a.ratio_max
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
    cross join lateral
        google_ai_internal.estimate_accuracy(g.grp, m.model, horizon) as a
    order by g.grp, m.model;
end;
$$;

comment on function public.quota_status() is
'Live usage per quota group and model: RPM/TPM over the sliding window, RPD for the Pacific day, cooldown, next reset, in-flight reservations, waiters, the token counter and how close estimates came to actual counts.';
revoke all on function public.quota_status() from public, anon, authenticated;
grant execute on function public.quota_status() to service_role;
