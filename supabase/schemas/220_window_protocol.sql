-- The window protocol: how a (quota group, model) window row is locked,
-- brought up to date, changed and written back, each rule written once, here.
--
-- WINDOW LOCK PROTOCOL (the only lock order; every function follows it):
--   1. acquire in WAIT: the caller's ticket row (every WAIT holds one), then
--      (in a rolled-back subtransaction) the one ahead of it
--      (240_wait_queue.sql); NO_WAIT takes no queue lock;
--   2. settlements (settle and the RPCs it calls): the
--      google_ai_reservations row (lock_reservation);
--   3. one google_ai_quota_state row at a time, through lock_window, which
--      reads the clock after the lock, sweeps the row to now - window_hold
--      and rolls the quota day; the caller changes its copy and writes it
--      back with store_window in the same transaction. recount changes a
--      locked reservation's contribution in one UPDATE of that row, and
--      rebuilds a missing row with window_from_ledger. A refused try on one
--      of several candidates, any WAIT try, and any try that another model's
--      try or a wait follows (a fallback chain) runs in a subtransaction that
--      is rolled back, releasing the row before the next one is locked or
--      before sleeping (230_key_choice.sql);
--   3b. after a grant, the end user's day row (google_ai_end_user_usage,
--      spend_end_user, 237_end_user_limits.sql), then, if the person's
--      limit was reached meanwhile, the grant's own reservation row (its
--      refund), as a spent budget gives a grant back;
--   4. a refusal's fold row (google_ai_refusals), locked after the windows,
--      and only by callers of the same caller, model, key set and reason,
--      who lock the same windows in the same order before it.
-- Nothing waits on a reservation row while holding a window row. No table
-- locks. No row lock is held across pg_sleep. run_maintenance takes only
-- maintenance_lock_key (try, never wait), then rows in the order above.
-- Sweeping expired tickets skips locked rows, so it never waits on a caller.
--
-- PLANS: hot-path functions set plan_cache_mode = force_generic_plan. Their
-- parameterized filters ("aliases is null or alias = any(...)", time ranges)
-- otherwise make the plan cache re-plan on every call (~100-150 us each);
-- the generic plans use the same indexes. Functions that acquire and settle
-- call are PL/pgSQL, whose plans are kept for the session: a LANGUAGE sql
-- function with a SET clause is never inlined, and PostgreSQL 15 parses and
-- plans its body again on every call (line_ahead alone took 0.6 ms a call).

/*
 * window_hold: how long a grant counts against its window, window_ms plus
 * window_guard_ms (Google receives the call a moment after the grant).
 *
 * Parameters: p_cfg, the settings row. Returns an interval. Raises nothing.
 * Example: select google_ai_internal.window_hold(google_ai_internal.settings());
 */
create or replace function google_ai_internal.window_hold(p_cfg public.google_ai_settings)
returns interval
language plpgsql
immutable
set search_path = ''
as $$
begin
    return pg_catalog.make_interval(secs => (p_cfg.window_ms + p_cfg.window_guard_ms) / 1000.0);
end;
$$;

comment on function google_ai_internal.window_hold(public.google_ai_settings) is
'How long a grant counts against its window: window_ms + window_guard_ms. The one place of that rule.';
revoke all on function google_ai_internal.window_hold(public.google_ai_settings)
from public, anon, authenticated;

/*
 * window_from_ledger: the totals of a window row counted from the ledger:
 * requests and tokens granted after p_swept_to, requests of quota day p_day.
 * The window row is derived data; this is its definition.
 *
 * Parameters: p_group, p_model; p_swept_to, the window's horizon; p_day,
 * its quota day.
 * Returns one row (window_requests, window_tokens, day_requests), zeros for
 * an empty ledger. Raises nothing.
 * Example: select * from google_ai_internal.window_from_ledger(
 *     'free-1', 'gemma-3-27b', now() - interval '61 s', current_date);
 */
create or replace function google_ai_internal.window_from_ledger(
    p_group text,
    p_model text,
    p_swept_to timestamptz,
    p_day date,
    out window_requests bigint,
    out window_tokens bigint,
    out day_requests bigint
)
language sql
stable
set search_path = ''
as $$
    select
        coalesce(sum(r.counted_requests) filter (where r.granted_at > p_swept_to), 0),
        coalesce(sum(r.counted_tokens) filter (where r.granted_at > p_swept_to), 0),
        coalesce(sum(r.counted_requests) filter (where r.rpd_day = p_day), 0)
    from public.google_ai_reservations as r
    where r.quota_group = p_group and r.model = p_model
$$;

comment on function google_ai_internal.window_from_ledger(text, text, timestamptz, date) is
'A window row''s totals counted from the ledger (after a horizon, on a quota day). The one place of that rule.';
revoke all on function google_ai_internal.window_from_ledger(text, text, timestamptz, date)
from public, anon, authenticated;

/*
 * lock_reservation: lock a reservation row (step 2 of the lock order, the
 * first lock a settlement takes).
 *
 * Parameters: p_reservation_id, as acquire() returned it.
 * Returns the locked row. Raises: LL006 null or unknown reservation.
 * Example: res := google_ai_internal.lock_reservation(reservation_id);
 */
create or replace function google_ai_internal.lock_reservation(p_reservation_id uuid)
returns public.google_ai_reservations
language plpgsql
volatile
set search_path = ''
as $$
declare
    res public.google_ai_reservations;
begin
    if p_reservation_id is null then
        raise exception using errcode = 'LL006', message = 'reservation_id must not be null',
            hint = 'Pass the reservation_id that acquire() returned.';
    end if;
    select r.* into res
    from public.google_ai_reservations as r
    where r.id = p_reservation_id
    for update;
    if not found then
        raise exception using errcode = 'LL006',
            message = pg_catalog.format('unknown reservation %s', p_reservation_id),
            hint = 'Pass the reservation_id that acquire() returned.';
    end if;
    return res;
end;
$$;

revoke all on function google_ai_internal.lock_reservation(uuid) from public, anon, authenticated;

/*
 * ensure_window: create the (group, model) window row if it is missing, its
 * totals rebuilt from the ledger: the row is derived data, and both acquire
 * and settlement create it the same way, so whichever inserts first, the
 * other's `on conflict` waits for it and then sees consistent totals.
 *
 * Parameters: p_group, p_model; p_now, the clock; p_hold, window_hold;
 * p_time_zone, the quota day's zone. Returns nothing. Raises nothing.
 * Example: perform google_ai_internal.ensure_window(
 *              'free-1', 'gemma-3-27b', google_ai_internal.clock(), interval '61 s',
 *              'America/Los_Angeles');
 */
create or replace function google_ai_internal.ensure_window(
    p_group text, p_model text, p_now timestamptz, p_hold interval, p_time_zone text
)
returns void
language plpgsql
volatile
set search_path = ''
as $$
begin
    insert into public.google_ai_quota_state as s (
        quota_group, model, window_requests, window_tokens, swept_to, rpd_day, day_requests
    )
    select
        p_group, p_model, w.window_requests, w.window_tokens, p_now - p_hold,
        (p_now at time zone p_time_zone)::date, w.day_requests
    from google_ai_internal.window_from_ledger(
        p_group, p_model, p_now - p_hold, (p_now at time zone p_time_zone)::date
    ) as w
    on conflict (quota_group, model) do nothing;
end;
$$;

revoke all on function google_ai_internal.ensure_window(text, text, timestamptz, interval, text)
from public, anon, authenticated;

/*
 * lock_window: lock the (group, model) window row (creating it if missing),
 * then read the clock (so grants on one window are stamped in lock order),
 * then bring the row up to date: subtract the ledger rows that aged out of
 * the window (+ guard) since the last sweep, and roll the quota day. The
 * caller writes the row back with store_window if it changes it.
 *
 * Parameters: p_group, p_model; p_cfg, the settings row.
 * Returns st (the swept copy of the row), at_now (the clock read after the
 * lock) and hold (the window_hold the row was swept with). Raises nothing.
 * Example: locked := google_ai_internal.lock_window('free-1', 'gemma-3-27b', cfg);
 */
create or replace function google_ai_internal.lock_window(
    p_group text,
    p_model text,
    p_cfg public.google_ai_settings,
    out st public.google_ai_quota_state,
    out at_now timestamptz,
    out hold interval
)
language plpgsql
volatile
set search_path = ''
set plan_cache_mode = force_generic_plan
as $$
declare
    horizon timestamptz;
    today date;
    moved_requests bigint;
    moved_tokens bigint;
    direction integer;
begin
    hold := google_ai_internal.window_hold(p_cfg);
    select s.* into st
    from public.google_ai_quota_state as s
    where s.quota_group = p_group and s.model = p_model
    for update;
    if not found then
        perform google_ai_internal.ensure_window(
            p_group, p_model, google_ai_internal.clock(), hold, p_cfg.rpd_time_zone
        );
        select s.* into st
        from public.google_ai_quota_state as s
        where s.quota_group = p_group and s.model = p_model
        for update;
    end if;

    at_now := google_ai_internal.clock();
    horizon := at_now - hold;
    if horizon <> st.swept_to then
        -- Rows between the old and the new horizon leave the window (the usual
        -- case) or, if the window grew (window_ms or the guard was raised) or
        -- the clock stepped back, enter it again.
        select coalesce(sum(r.counted_requests), 0), coalesce(sum(r.counted_tokens), 0)
        into moved_requests, moved_tokens
        from public.google_ai_reservations as r
        where
            r.quota_group = p_group
            and r.model = p_model
            and r.granted_at > least(st.swept_to, horizon)
            and r.granted_at <= greatest(st.swept_to, horizon);
        direction := case when horizon > st.swept_to then -1 else 1 end;
        st.window_requests := st.window_requests + direction * moved_requests;
        st.window_tokens := st.window_tokens + direction * moved_tokens;
        st.swept_to := horizon;
    end if;

    today := (at_now at time zone p_cfg.rpd_time_zone)::date;
    if st.rpd_day is null or today > st.rpd_day then
        st.rpd_day := today;
        st.day_requests := 0;
    end if;
end;
$$;

comment on function google_ai_internal.lock_window(text, text, public.google_ai_settings) is
'Lock a window row (step 3 of the lock order), read the clock, sweep it to now - window_hold and roll its quota day.';
revoke all on function google_ai_internal.lock_window(text, text, public.google_ai_settings)
from public, anon, authenticated;

/*
 * store_window: write a window row that the caller locked with lock_window
 * and changed in its copy (totals, sweep horizon, quota day, cooldown,
 * pacing, outage) back to the table.
 *
 * Parameters: p_st, the changed copy. Returns nothing. Raises nothing.
 * Example: see try_reserve and record_rate_limit.
 */
create or replace function google_ai_internal.store_window(p_st public.google_ai_quota_state)
returns void
language plpgsql
volatile
set search_path = ''
set plan_cache_mode = force_generic_plan
as $$
begin
    update public.google_ai_quota_state as s
    set
        window_requests = p_st.window_requests,
        window_tokens = p_st.window_tokens,
        swept_to = p_st.swept_to,
        rpd_day = p_st.rpd_day,
        day_requests = p_st.day_requests,
        cooldown_until = p_st.cooldown_until,
        cooldown_reason = p_st.cooldown_reason,
        paced_until = p_st.paced_until,
        lead_priority = p_st.lead_priority,
        lead_at = p_st.lead_at,
        failures_in_a_row = p_st.failures_in_a_row,
        outage_cooldown_ms = p_st.outage_cooldown_ms,
        outage_cooled_at = p_st.outage_cooled_at
    where s.quota_group = p_st.quota_group and s.model = p_st.model;
end;
$$;

comment on function google_ai_internal.store_window(public.google_ai_quota_state) is
'Write back a window row locked by lock_window (step 3 of the lock order, same transaction).';
revoke all on function google_ai_internal.store_window(public.google_ai_quota_state)
from public, anon, authenticated;

/*
 * recount: change what a (locked) reservation contributes to its window
 * totals, in one UPDATE of the window row (step 3 of the lock order). p_res
 * is the row as it was before the caller wrote its new counts. A row that
 * already left the window (granted_at <= swept_to) no longer affects the
 * window totals; a row of an earlier quota day no longer affects the day.
 * The sweep later subtracts the new counted values, so the totals stay exact.
 * When nothing changes (a settlement whose estimate was Google's own count,
 * as the carriers' exact counting makes it) the window row is not touched:
 * a settle then takes no lock on the row every grant of its group needs.
 * If the window row is missing (truncated, or dropped by maintenance), it is
 * rebuilt, locked, and recounted from the ledger, which already holds this
 * reservation's new counts: applying the delta on top would count it twice.
 *
 * Parameters: p_res (the reservation before the change), p_requests and
 * p_tokens (what it counts now). Returns nothing. Raises nothing.
 * Example: perform google_ai_internal.recount(res, 0::smallint, 0);  -- a refund
 */
create or replace function google_ai_internal.recount(
    p_res public.google_ai_reservations, p_requests smallint, p_tokens integer
)
returns void
language plpgsql
volatile
set search_path = ''
as $$
declare
    cfg public.google_ai_settings;
begin
    if p_requests = p_res.counted_requests and p_tokens = p_res.counted_tokens then
        return;
    end if;
    update public.google_ai_quota_state as s
    set
        window_requests = s.window_requests + case
            when p_res.granted_at > s.swept_to then p_requests - p_res.counted_requests
            else 0
        end,
        window_tokens = s.window_tokens + case
            when p_res.granted_at > s.swept_to then p_tokens - p_res.counted_tokens
            else 0
        end,
        day_requests = s.day_requests + case
            when p_res.rpd_day = s.rpd_day then p_requests - p_res.counted_requests
            else 0
        end
    where s.quota_group = p_res.quota_group and s.model = p_res.model;
    if found then
        return;
    end if;

    -- The window row is gone (truncated, or dropped by maintenance): rebuild
    -- it, then take its lock and recount it from the ledger in a statement
    -- that starts after the lock is held.
    cfg := google_ai_internal.settings();
    perform google_ai_internal.ensure_window(
        p_res.quota_group, p_res.model, google_ai_internal.clock(),
        google_ai_internal.window_hold(cfg),
        cfg.rpd_time_zone
    );
    perform 1
    from public.google_ai_quota_state as s
    where s.quota_group = p_res.quota_group and s.model = p_res.model
    for update;
    update public.google_ai_quota_state as s
    set (window_requests, window_tokens, day_requests) = (
        select w.window_requests, w.window_tokens, w.day_requests
        from google_ai_internal.window_from_ledger(s.quota_group, s.model, s.swept_to, s.rpd_day) as w
    )
    where s.quota_group = p_res.quota_group and s.model = p_res.model;
end;
$$;

revoke all on function google_ai_internal.recount(public.google_ai_reservations, smallint, integer)
from public, anon, authenticated;
