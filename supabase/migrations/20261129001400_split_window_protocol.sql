-- The window protocol in one place: each of its rules is written once, as a
-- helper beside the lock order below, instead of in every function that
-- needs it: a window's length plus guard (window_hold), a window row's
-- totals counted from the ledger (window_from_ledger), the write-back of a
-- locked window row (store_window), the advisory key of a waiter queue
-- (queue_lock_key) and the key of run_maintenance's lock
-- (maintenance_lock_key). The functions that wrote them out are redefined
-- here, unchanged otherwise; lock_window also returns the hold it swept with.
--
-- SQLSTATEs of llm-limits (class LL; raised with DETAIL and HINT):
--   LL001 unknown model            LL006 unknown reservation
--   LL002 invalid token count      LL007 invalid argument
--   LL003 request larger than TPM  LL008 reservation already settled otherwise
--   LL004 unknown mode             LL009 unknown key
--   LL005 invalid wait             LL010 audit log is append-only
--   LL999 internal sentinel: raised and caught inside one function to roll
--         back a subtransaction (a refused try_reserve, a ticket_in_call
--         probe); it never reaches a caller.
--
-- Why some RPCs write their audit rows inline (disable_key and enable_key,
-- report_rate_limit through audit(), run_maintenance's expiries, acquire's
-- refusals through record_acquire_verdict) while configuration edits are
-- audited by a trigger: the RPC knows what happened and why (the reason, the
-- quota id, the lease, the refusal) where a trigger sees only a changed row,
-- and the row is written in the transaction of the change it records, so it
-- commits or rolls back with it (which is also why a refusal is returned,
-- not raised). Configuration edits come from anywhere (SQL editor, dashboard,
-- CLI): only a trigger catches them all. Grants and settlements write no
-- audit row; the ledger row is their record.
--
-- WINDOW LOCK PROTOCOL (the lock order of 20261124000400, extended for
-- tickets by 20261129001240):
--   1. acquire without a ticket: the waiter-queue advisory lock
--      queue_lock_key(model, key set), WAIT mode only, held for the call;
--      with a ticket: the caller's ticket row, then (in a rolled-back
--      subtransaction) the one ahead of it;
--   2. settlements: the google_ai_reservations row (lock_reservation);
--   3. one google_ai_quota_state row at a time, through lock_window, which
--      reads the clock after the lock, sweeps the row to now - window_hold
--      and rolls the quota day; the caller changes its copy and writes it
--      back with store_window in the same transaction. recount changes a
--      locked reservation's contribution in one UPDATE of that row, and
--      rebuilds a missing row with window_from_ledger.
-- Nothing waits on a reservation row while holding a window row. No table
-- locks. No row lock is held across pg_sleep. run_maintenance takes only
-- maintenance_lock_key (try, never wait), then rows in the order above.

/*
 * window_hold: how long a grant counts against its window, window_ms plus
 * window_guard_ms (Google receives the call a moment after the grant).
 *
 * Parameters: p_cfg, the settings row. Returns an interval. Raises nothing.
 * Example: select google_ai_internal.window_hold(google_ai_internal.settings());
 */
create function google_ai_internal.window_hold(p_cfg public.google_ai_settings)
returns interval
language plpgsql
immutable
set search_path = ''
as $$
begin
    return pg_catalog.make_interval(secs => (p_cfg.window_ms + p_cfg.window_guard_ms) / 1000.0);
end;
$$;

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
create function google_ai_internal.window_from_ledger(
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

/*
 * store_window: write a window row that the caller locked with lock_window
 * and changed in its copy (totals, sweep horizon, quota day, cooldown) back
 * to the table.
 *
 * Parameters: p_st, the changed copy. Returns nothing. Raises nothing.
 * Example: see try_reserve and report_rate_limit.
 */
create function google_ai_internal.store_window(p_st public.google_ai_quota_state)
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
        cooldown_reason = p_st.cooldown_reason
    where s.quota_group = p_st.quota_group and s.model = p_st.model;
end;
$$;

/*
 * queue_lock_key: the two halves of the advisory lock that callers without
 * a ticket queue on in acquire's WAIT mode. The model half alone tells
 * queue_waiters which waiters belong to a model (pg_locks shows it as
 * classid, with objsubid 2 for the two-key form).
 *
 * Parameters: p_model, the google_ai_model_limits.model name; p_key_aliases,
 * acquire's key_aliases (null: any key; order and duplicates do not matter).
 * Returns model_half and set_half, for pg_advisory_xact_lock(integer, integer).
 * Raises nothing.
 * Example: select * from google_ai_internal.queue_lock_key('gemma-3-27b', null);
 */
create function google_ai_internal.queue_lock_key(
    p_model text,
    p_key_aliases text [],
    out model_half integer,
    out set_half integer
)
language plpgsql
immutable
set search_path = ''
as $$
begin
    model_half := pg_catalog.hashtext('llm_limits:' || p_model);
    set_half := pg_catalog.hashtext(google_ai_internal.queue_key_set(p_key_aliases));
end;
$$;

/*
 * maintenance_lock_key: the advisory lock that lets one run_maintenance()
 * run at a time: a fixed class of llm-limits and the function's name.
 *
 * Returns class_id and obj_id, for pg_try_advisory_xact_lock(integer, integer).
 * Raises nothing.
 * Example: select * from google_ai_internal.maintenance_lock_key();
 */
create function google_ai_internal.maintenance_lock_key(
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

comment on function google_ai_internal.window_hold(public.google_ai_settings) is
'How long a grant counts against its window: window_ms + window_guard_ms. The one place of that rule.';
comment on function google_ai_internal.window_from_ledger(text, text, timestamptz, date) is
'A window row''s totals counted from the ledger (after a horizon, on a quota day). The one place of that rule.';
comment on function google_ai_internal.store_window(public.google_ai_quota_state) is
'Write back a window row locked by lock_window (step 3 of the lock order, same transaction).';
comment on function google_ai_internal.queue_lock_key(text, text []) is
'The advisory key of a waiter queue (step 1 of the lock order); queue_waiters finds holders by its model half.';
comment on function google_ai_internal.maintenance_lock_key() is
'The advisory key that lets one run_maintenance() run at a time (tried, never waited for).';

revoke all on function google_ai_internal.window_hold(public.google_ai_settings)
from public, anon, authenticated;
revoke all on function google_ai_internal.window_from_ledger(text, text, timestamptz, date)
from public, anon, authenticated;
revoke all on function google_ai_internal.store_window(public.google_ai_quota_state)
from public, anon, authenticated;
revoke all on function google_ai_internal.queue_lock_key(text, text [])
from public, anon, authenticated;
revoke all on function google_ai_internal.maintenance_lock_key()
from public, anon, authenticated;

-- Create the (group, model) window row if it is missing, its totals rebuilt
-- from the ledger: the row is derived data, and both acquire and settlement
-- create it the same way, so whichever inserts first, the other's
-- `on conflict` waits for it and then sees consistent totals.
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

drop function google_ai_internal.lock_window(text, text, public.google_ai_settings);

-- Lock the (group, model) window row, then read the clock (so grants on one
-- window are stamped in lock order), then bring the row up to date: subtract
-- the ledger rows that aged out of the window (+ guard) since the last sweep,
-- and roll the quota day. The caller writes the row back with store_window if
-- it changes it. hold is the window_hold the row was swept with.
create function google_ai_internal.lock_window(
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
 * try_reserve: one try on one candidate: lock its window, decide, and on
 * success write the reservation (with the time acquire has run so far) and
 * the new totals. On refusal nothing is written. retry_after_ms is the
 * truthful earliest moment every binding dimension has freed, computed from
 * the ledger (a release can only make it sooner).
 *
 * Returns (granted, reservation_id, reason, retry_after_ms). Raises nothing of
 * its own. Example: see google_ai_internal.reserve_round.
 */
create or replace function google_ai_internal.try_reserve(
    p_cand google_ai_internal.candidate,
    p_model public.google_ai_model_limits,
    p_tokens integer,
    p_caller text,
    p_request_id text,
    p_cfg public.google_ai_settings,
    out granted boolean,
    out reservation_id uuid,
    out reason text,
    out retry_after_ms integer
)
language plpgsql
volatile
set search_path = ''
set plan_cache_mode = force_generic_plan
as $$
declare
    hold interval;
    locked record;
    st public.google_ai_quota_state;
    at_now timestamptz;
    free_at timestamptz;
    candidate timestamptz;
begin
    granted := false;
    locked := google_ai_internal.lock_window(p_cand.quota_group, p_model.model, p_cfg);
    st := locked.st;
    at_now := locked.at_now;
    hold := locked.hold;

    if st.cooldown_until > at_now then
        reason := 'cooldown';
        free_at := st.cooldown_until;
    end if;

    if p_cand.rpd is not null and st.day_requests + 1 > p_cand.rpd then
        candidate := google_ai_internal.next_day_start(at_now, p_cfg.rpd_time_zone);
        if free_at is null or candidate > free_at then
            reason := 'rpd';
            free_at := candidate;
        end if;
    end if;

    if p_cand.rpm is not null and st.window_requests + 1 > p_cand.rpm then
        -- The slot frees when the k-th oldest counted grant leaves the window.
        select r.granted_at + hold into candidate
        from public.google_ai_reservations as r
        where
            r.quota_group = p_cand.quota_group and r.model = p_model.model
            and r.granted_at > st.swept_to and r.counted_requests > 0
        order by r.granted_at
        offset greatest(st.window_requests - p_cand.rpm, 0) limit 1;
        candidate := coalesce(candidate, at_now + hold);
        if free_at is null or candidate > free_at then
            reason := 'rpm';
            free_at := candidate;
        end if;
    end if;

    if p_cand.tpm is not null and st.window_tokens + p_tokens > p_cand.tpm then
        -- Tokens free when enough of the oldest grants have left the window.
        select w.granted_at + hold into candidate
        from (
            select
                r.granted_at,
                sum(r.counted_tokens) over (order by r.granted_at, r.id) as freed
            from public.google_ai_reservations as r
            where
                r.quota_group = p_cand.quota_group and r.model = p_model.model
                and r.granted_at > st.swept_to and r.counted_tokens > 0
        ) as w
        where w.freed >= st.window_tokens + p_tokens - p_cand.tpm
        order by w.granted_at
        limit 1;
        candidate := coalesce(candidate, at_now + hold);
        if free_at is null or candidate > free_at then
            reason := 'tpm';
            free_at := candidate;
        end if;
    end if;

    if reason is not null then
        retry_after_ms := greatest(
            1, pg_catalog.ceil(extract(epoch from free_at - at_now) * 1000)
        )::integer;
        return;
    end if;

    insert into public.google_ai_reservations (
        key_alias, quota_group, model, api_model, estimated_tokens, counted_tokens,
        granted_at, rpd_day, lease_until, caller, request_id, waited_ms
    ) values (
        p_cand.key_alias, p_cand.quota_group, p_model.model,
        coalesce(p_model.api_model, p_model.model),
        p_tokens, p_tokens, at_now, st.rpd_day,
        at_now + pg_catalog.make_interval(secs => p_cfg.lease_ms / 1000.0),
        p_caller, p_request_id,
        -- acquire runs as one statement: its start is when the caller asked.
        greatest(0, pg_catalog.round(
            extract(epoch from pg_catalog.clock_timestamp() - pg_catalog.statement_timestamp())
            * 1000
        ))::integer
    )
    returning id into reservation_id;

    st.window_requests := st.window_requests + 1;
    st.window_tokens := st.window_tokens + p_tokens;
    st.day_requests := st.day_requests + 1;
    perform google_ai_internal.store_window(st);
    granted := true;
end;
$$;

revoke all on function google_ai_internal.try_reserve(
    google_ai_internal.candidate, public.google_ai_model_limits, integer, text, text,
    public.google_ai_settings
) from public, anon, authenticated;

-- Change what a (locked) reservation contributes to its window totals, in
-- one UPDATE of the window row (second in the lock order). p_res is the row
-- as it was before the caller wrote its new counts. A row that already left
-- the window (granted_at <= swept_to) no longer affects the window totals; a
-- row of an earlier quota day no longer affects the day. The sweep later
-- subtracts the new counted values, so the totals stay exact.
-- If the window row is missing (truncated, or dropped by maintenance), it is
-- rebuilt, locked, and recounted from the ledger, which already holds this
-- reservation's new counts: applying the delta on top would count it twice.
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

/*
 * turn_estimate: the earliest moment a waiter with `p_ahead` requests
 * (`p_ahead_tokens` tokens) ahead of it in line could be granted, read from
 * the ledger without locks: its slot is the (p_ahead + 1)-th request slot to
 * free across the candidate groups (a slot used again frees a window later), no sooner than the group's TPM has room
 * for the tokens ahead (an even share per group) plus its own, nor before a
 * cooldown or a spent day ends. A release can only make it sooner, which
 * the head of the queue catches; other queues on the same groups can make it
 * later, which the waiter finds out when it calls back.
 *
 * Parameters: the model, its candidates (acquire's order), the requests and
 * tokens ahead, the waiter's own tokens, the settings.
 * Returns a timestamptz on google_ai_internal.clock(). Raises nothing.
 * Example: select google_ai_internal.turn_estimate(m, cands, 3, 3600, 1200, cfg);
 */
create or replace function google_ai_internal.turn_estimate(
    p_model public.google_ai_model_limits,
    p_cands google_ai_internal.candidate [],
    p_ahead integer,
    p_ahead_tokens bigint,
    p_tokens integer,
    p_cfg public.google_ai_settings
)
returns timestamptz
language plpgsql
stable
set search_path = ''
set plan_cache_mode = force_generic_plan
as $$
declare
    hold interval := google_ai_internal.window_hold(p_cfg);
    at_now timestamptz := google_ai_internal.clock();
    cand google_ai_internal.candidate;
    tried text [] := '{}';
    groups integer;
    slots timestamptz [] := '{}';
    group_slots timestamptz [];
    floor_at timestamptz;
    used_requests bigint;
    used_tokens bigint;
    need bigint;
    tokens_at timestamptz;
    free_now integer;
    st public.google_ai_quota_state;
begin
    select count(distinct c.quota_group) into groups from pg_catalog.unnest(p_cands) as c;
    if groups = 0 then
        return at_now;
    end if;
    foreach cand in array p_cands loop
        continue when cand.quota_group = any(tried);
        tried := tried || cand.quota_group;
        select coalesce(sum(r.counted_requests), 0), coalesce(sum(r.counted_tokens), 0)
        into used_requests, used_tokens
        from public.google_ai_reservations as r
        where
            r.quota_group = cand.quota_group and r.model = p_model.model
            and r.granted_at > at_now - hold;
        select s.* into st
        from public.google_ai_quota_state as s
        where s.quota_group = cand.quota_group and s.model = p_model.model;

        floor_at := greatest(at_now, st.cooldown_until);
        if
            cand.rpd is not null
            and st.rpd_day = (at_now at time zone p_cfg.rpd_time_zone)::date
            and st.day_requests + 1 > cand.rpd
        then
            floor_at := greatest(
                floor_at, google_ai_internal.next_day_start(at_now, p_cfg.rpd_time_zone)
            );
        end if;
        need := used_tokens + p_ahead_tokens / groups + p_tokens - cand.tpm;
        if need > 0 then
            select w.granted_at + hold into tokens_at
            from (
                select
                    r.granted_at,
                    sum(r.counted_tokens) over (order by r.granted_at, r.id) as freed
                from public.google_ai_reservations as r
                where
                    r.quota_group = cand.quota_group and r.model = p_model.model
                    and r.granted_at > at_now - hold and r.counted_tokens > 0
            ) as w
            where w.freed >= need
            order by w.granted_at
            limit 1;
            floor_at := greatest(floor_at, coalesce(tokens_at, at_now + hold));
        end if;

        free_now := least(
            greatest(coalesce(cand.rpm - used_requests, p_ahead + 1), 0), p_ahead + 1
        )::integer;
        group_slots := pg_catalog.array_fill(floor_at, array[free_now]);
        if free_now < p_ahead + 1 then
            -- The k-th oldest grant in the window frees the k-th slot ...
            group_slots := group_slots || array(
                select greatest(r.granted_at + hold, floor_at)
                from public.google_ai_reservations as r
                where
                    r.quota_group = cand.quota_group and r.model = p_model.model
                    and r.granted_at > at_now - hold and r.counted_requests > 0
                order by r.granted_at
                offset greatest(used_requests - cand.rpm, 0)
                limit p_ahead + 1 - free_now
            );
            -- ... and each slot serves again a whole window after it is used.
            while pg_catalog.cardinality(group_slots) < p_ahead + 1 loop
                group_slots := group_slots || (
                    group_slots[pg_catalog.cardinality(group_slots) + 1 - cand.rpm] + hold
                );
            end loop;
        end if;
        slots := slots || group_slots;
    end loop;
    return coalesce(
        (select s from pg_catalog.unnest(slots) as s order by s offset p_ahead limit 1),
        at_now + hold
    );
end;
$$;

revoke all on function google_ai_internal.turn_estimate(
    public.google_ai_model_limits, google_ai_internal.candidate [], integer, bigint, integer,
    public.google_ai_settings
) from public, anon, authenticated;

/*
 * report_rate_limit: Google answered 429 despite our accounting.
 *
 * The call stays counted. The reservation's (group, model) cools down until
 * now + retry_delay_ms (default google_ai_settings.default_cooldown_ms), or
 * until the next midnight of the quota day when quota_id names a per-day
 * quota. A cooldown is only ever extended. Audited as `rate_limited`.
 * Repeating it is harmless.
 *
 * Returns the cooldown end.
 * Raises: LL006 unknown reservation, LL007 bad quota_id or retry_delay_ms.
 * Example: select public.report_rate_limit('…uuid…',
 *            'GenerateRequestsPerMinutePerProjectPerModel-FreeTier', 21000);
 */
create or replace function public.report_rate_limit(
    reservation_id uuid,
    quota_id text default null,
    retry_delay_ms integer default null
)
returns timestamptz
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    cfg public.google_ai_settings := google_ai_internal.settings();
    res public.google_ai_reservations;
    st public.google_ai_quota_state;
    locked record;
    at_now timestamptz;
    until timestamptz;
    per_day boolean := coalesce(quota_id ilike '%PerDay%', false);
begin
    perform google_ai_internal.check_text('quota_id', quota_id, 300);
    if retry_delay_ms is not null and (retry_delay_ms < 0 or retry_delay_ms > 86400000) then
        raise exception using errcode = 'LL007',
            message = pg_catalog.format('retry_delay_ms must be between 0 and 86400000, got %s',
                                        retry_delay_ms),
            hint = 'Pass RetryInfo.retryDelay in milliseconds, or null when Google gave none.';
    end if;
    res := google_ai_internal.lock_reservation(report_rate_limit.reservation_id);
    locked := google_ai_internal.lock_window(res.quota_group, res.model, cfg);
    st := locked.st;
    at_now := locked.at_now;
    -- A per-day violation may carry a short retryDelay; the day is what binds.
    until := case
        when per_day then google_ai_internal.next_day_start(at_now, cfg.rpd_time_zone)
        else at_now + pg_catalog.make_interval(
            secs => coalesce(retry_delay_ms, cfg.default_cooldown_ms) / 1000.0
        )
    end;
    if st.cooldown_until is null or until > st.cooldown_until then
        st.cooldown_until := until;
        st.cooldown_reason := coalesce(quota_id, 'rate_limited');
    end if;
    perform google_ai_internal.store_window(st);
    if res.status in ('reserved', 'expired') then
        update public.google_ai_reservations as r
        set status = 'rate_limited', settled_at = at_now
        where r.id = res.id;
    end if;
    perform google_ai_internal.audit('rate_limited', res, pg_catalog.jsonb_build_object(
        'quota_id', quota_id,
        'retry_delay_ms', retry_delay_ms,
        'per_day', per_day,
        'cooldown_until', st.cooldown_until,
        'quota_group', res.quota_group,
        'previous_status', res.status
    ));
    return st.cooldown_until;
end;
$$;

comment on function public.report_rate_limit(uuid, text, integer) is
'Record a 429 from Google for a grant: it stays counted and its group and model cool down (until the next Pacific midnight for a per-day quota).';


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

/*
 * acquire: atomically reserve one request and `tokens` input tokens of
 * `model` on the best usable key.
 *
 * Parameters:
 *   model        limits row name or API id ('gemma-3-27b' or 'gemma-3-27b-it')
 *   tokens       estimated input tokens (an upper bound; commit_usage reconciles)
 *   mode         'NO_WAIT' (one attempt) or 'WAIT' (wait for capacity, see below)
 *   max_wait_ms  the caller's whole remaining wait, 0..google_ai_settings.max_wait_cap_ms
 *   key_aliases  the keys this caller holds; null means every active key
 *   caller, request_id  free text for the audit log (<= 200 characters)
 *   ticket       optional uuid of the caller's making: its place in line,
 *                kept between calls (pass the same one until granted)
 *
 * Returns one acquire_result row. A refusal is a row with granted = false and
 * reason in (rpm, tpm, rpd, cooldown, no_key, wait_timeout, queued), never
 * an exception, so its audit row is kept.
 *
 * WAIT in slices: no call stays in the database longer than
 * google_ai_settings.wait_slice_ms (2 s by default), so a transaction pooler
 * keeps its connections for other work. Waiters of the same model and key
 * set queue FIFO.
 *   - With a ticket: the call returns a grant, a final refusal (wait_timeout
 *     at max_wait_ms, or rpd/cooldown that outlast it, or no_key), or reason
 *     'queued': not served yet, call again with the same ticket and the wait
 *     left after retry_after_ms (0 = at once; sleep without holding a
 *     connection). The place expires if the caller is more than
 *     wait_ticket_grace_ms late. Only the final verdict is audited, with the
 *     whole wait in waited_ms.
 *   - Without a ticket (psql, PostgREST, another SDK): one slice at most.
 *     It waits in the database only when no ticket holder waits in its
 *     queue, and returns a grant, or a refusal whose retry_after_ms is
 *     truthful: the binding limit (rpm, tpm, ...) when the slice ended
 *     first, wait_timeout when max_wait_ms did, or 'queued' at once with the
 *     expected turn when ticket holders wait ahead. It never waits past
 *     max_wait_ms. Calling again starts a new wait at the tail.
 *
 * Raises: LL001 unknown model, LL002 bad tokens, LL003 tokens > TPM,
 *         LL004 unknown mode, LL005 bad max_wait_ms, LL007 text too long.
 * Example: select * from public.acquire('gemma-3-27b', 1200, 'WAIT', 30000,
 *                                       array['bot-key-1'], 'bot', 'msg-42',
 *                                       'b9e1c6c2-4f64-4a4e-9d0c-3c8f0f3f6a11');
 */
create or replace function public.acquire(
    model text,
    tokens integer,
    mode text default 'NO_WAIT',
    max_wait_ms integer default 0,
    key_aliases text [] default null,
    caller text default null,
    request_id text default null,
    ticket uuid default null
)
returns public.acquire_result
language plpgsql
volatile
security definer
set search_path = ''
set plan_cache_mode = force_generic_plan
as $$
declare
    cfg public.google_ai_settings := google_ai_internal.settings();
    started timestamptz := pg_catalog.clock_timestamp();
    wanted public.google_ai_model_limits;
    wait_mode boolean;
    deadline timestamptz;
    cands google_ai_internal.candidate [];
    verdict public.acquire_result;
    in_line record;
    queued record;
    biggest_tpm integer;
    unlimited boolean;
    queue_model integer;
    queue_key integer;
    remaining_ms double precision;
    rounds integer := 0;
    queue_timed_out boolean := false;
    sliced boolean;
    old_lock_timeout text;
begin
    -- Validate everything before touching any state.
    if acquire.model is null then
        raise exception using errcode = 'LL001', message = 'model must not be null',
            hint = 'Pass a model name such as gemma-3-27b.';
    end if;
    -- One cheap test on the hot path; check_text names the culprit.
    if greatest(
        pg_catalog.length(acquire.model), pg_catalog.length(caller), pg_catalog.length(request_id)
    ) > 200 then
        perform google_ai_internal.check_text('model', acquire.model, 200);
        perform google_ai_internal.check_text('caller', caller, 200);
        perform google_ai_internal.check_text('request_id', request_id, 200);
    end if;
    wanted := google_ai_internal.resolve_model(acquire.model);
    if tokens is null or tokens < 0 then
        raise exception using errcode = 'LL002',
            message = pg_catalog.format('tokens must be a non-negative integer, got %s',
                                        coalesce(tokens::text, 'null')),
            hint = 'Pass an upper-bound estimate of the input tokens.';
    end if;
    if mode is null or pg_catalog.upper(mode) not in ('WAIT', 'NO_WAIT') then
        raise exception using errcode = 'LL004',
            message = pg_catalog.format('unknown mode %L',
                                        pg_catalog.left(coalesce(mode, 'null'), 50)),
            hint = 'mode is WAIT or NO_WAIT.';
    end if;
    wait_mode := pg_catalog.upper(mode) = 'WAIT';
    if max_wait_ms is null or max_wait_ms < 0 or max_wait_ms > cfg.max_wait_cap_ms then
        raise exception using errcode = 'LL005',
            message = pg_catalog.format('max_wait_ms must be between 0 and %s, got %s',
                                        cfg.max_wait_cap_ms, coalesce(max_wait_ms::text, 'null')),
            detail = 'The cap keeps a WAIT under Supabase''s 2-minute statement timeout.',
            hint = 'Wait longer by calling acquire again.';
    end if;
    if key_aliases is not null and pg_catalog.cardinality(key_aliases) > 1000 then
        raise exception using errcode = 'LL007', message = 'key_aliases has more than 1000 entries',
            hint = 'Pass only the aliases this process holds.';
    end if;

    cands := array(
        select c
        from google_ai_internal.candidates(
            wanted.model, key_aliases, google_ai_internal.clock(), tokens
        ) as c
    );
    if pg_catalog.cardinality(cands) = 0 then
        -- No candidate: either no usable key (a refusal) or a request larger
        -- than every TPM that applies (bad input: it can never be granted).
        select
            coalesce(max(coalesce(o.tpm, wanted.tpm::integer)), wanted.tpm::integer),
            coalesce(bool_or(coalesce(o.tpm, wanted.tpm::integer) is null), wanted.tpm is null)
        into biggest_tpm, unlimited
        from public.google_ai_api_keys as k
        left join public.google_ai_group_limits as o
            on o.quota_group = coalesce(k.quota_group, k.key_alias) and o.model = wanted.model
        where k.is_active is true and (key_aliases is null or k.key_alias = any(key_aliases));
        if not unlimited and tokens > biggest_tpm then
            raise exception using errcode = 'LL003',
                message = pg_catalog.format(
                    '%s tokens can never fit: the largest TPM of %s is %s',
                    tokens, wanted.model, biggest_tpm
                ),
                hint = 'Split the prompt or raise the limit for a paid-tier group.';
        end if;
    end if;

    if wait_mode and ticket is not null and pg_catalog.cardinality(cands) > 0 then
        in_line := google_ai_internal.wait_in_line(
            ticket, wanted, key_aliases, tokens, caller, request_id, max_wait_ms, cfg, started
        );
        verdict := in_line.verdict;
        if verdict.reason = 'queued' then
            return verdict;  -- the wait goes on; its last call audits all of it
        end if;
        perform google_ai_internal.record_acquire_verdict(
            verdict, wanted.model, tokens, 'WAIT', max_wait_ms, in_line.rounds, caller, request_id,
            key_aliases
        );
        return verdict;
    end if;

    -- Without a ticket: one slice at most.
    deadline := started + pg_catalog.make_interval(
        secs => least(max_wait_ms, cfg.wait_slice_ms) / 1000.0
    );
    sliced := max_wait_ms > cfg.wait_slice_ms;
    wait_mode := wait_mode and max_wait_ms > 0;
    if wait_mode then
        select w.* into queued
        from google_ai_internal.waiting_tickets(wanted.model, key_aliases) as w;
        if queued.ahead > 0 and pg_catalog.cardinality(cands) > 0 then
            -- Ticket holders are in line: this caller's turn comes after theirs.
            rounds := 1;
            verdict.granted := false;
            verdict.model := coalesce(wanted.api_model, wanted.model);
            verdict.reason := 'queued';
            verdict.retry_after_ms := greatest(1, pg_catalog.ceil(extract(epoch from
                google_ai_internal.turn_estimate(
                    wanted, cands, queued.ahead, queued.ahead_tokens, tokens, cfg
                ) - google_ai_internal.clock()
            ) * 1000))::integer;
            wait_mode := false;
        else
            -- Callers without a ticket queue among themselves for this one
            -- slice on an advisory lock, which lives exactly as long as the call.
            -- The model half lets quota_status() count them per model.
            select q.model_half, q.set_half into queue_model, queue_key
            from google_ai_internal.queue_lock_key(wanted.model, key_aliases) as q;
            if not pg_catalog.pg_try_advisory_xact_lock(queue_model, queue_key) then
                old_lock_timeout := pg_catalog.current_setting('lock_timeout');
                begin
                    perform pg_catalog.set_config('lock_timeout', least(
                        max_wait_ms, cfg.wait_slice_ms
                    )::text || 'ms', true);
                    perform pg_catalog.pg_advisory_xact_lock(queue_model, queue_key);
                    perform pg_catalog.set_config('lock_timeout', old_lock_timeout, true);
                exception when lock_not_available then
                    queue_timed_out := true;
                end;
                -- Keys may have changed while we queued.
                cands := array(
                    select c
                    from google_ai_internal.candidates(
                        wanted.model, key_aliases, google_ai_internal.clock(), tokens
                    ) as c
                );
            end if;
        end if;
    end if;

    loop
        exit when verdict.reason = 'queued';
        rounds := rounds + 1;
        verdict := google_ai_internal.reserve_round(
            wanted, cands, tokens, caller, request_id, cfg, wait_mode
        );
        exit when verdict.granted or not wait_mode or verdict.reason = 'no_key' or queue_timed_out;
        remaining_ms := extract(epoch from deadline - pg_catalog.clock_timestamp()) * 1000;
        if remaining_ms <= 0 then
            -- The slice ended first: the binding limit stays the reason.
            if not sliced then
                verdict.reason := 'wait_timeout';
            end if;
            exit;
        end if;
        -- Nothing but time frees a cooldown or a day: don't sit out a wait
        -- that cannot end in a grant.
        exit when verdict.reason in ('rpd', 'cooldown') and verdict.retry_after_ms > remaining_ms;
        -- Sleep until the window frees, but re-check every wait_recheck_ms to
        -- notice releases and reconciled commits.
        perform pg_catalog.pg_sleep(
            least(verdict.retry_after_ms, cfg.wait_recheck_ms, remaining_ms) / 1000.0
        );
        cands := array(
            select c
            from google_ai_internal.candidates(
                wanted.model, key_aliases, google_ai_internal.clock(), tokens
            ) as c
        );
    end loop;
    if queue_timed_out and not verdict.granted and not sliced then
        verdict.reason := 'wait_timeout';
    end if;

    verdict.waited_ms := pg_catalog.round(
        extract(epoch from pg_catalog.clock_timestamp() - started) * 1000
    )::integer;

    perform google_ai_internal.record_acquire_verdict(
        verdict, wanted.model, tokens, pg_catalog.upper(mode), max_wait_ms, rounds, caller,
        request_id, key_aliases
    );
    return verdict;
end;
$$;

comment on function public.acquire(text, integer, text, integer, text [], text, text, uuid) is
'Reserve one request and `tokens` input tokens of a model on the best key (RPM/TPM over an exact sliding window, RPD per Pacific day). Returns a grant or a refusal row; raises only on bad input (LL001-LL007). WAIT returns within google_ai_settings.wait_slice_ms: with a ticket (a uuid of the caller''s making) the caller keeps its place and calls again after retry_after_ms while reason = ''queued''; without one it gets a grant or a truthful refusal after one slice at most, never past max_wait_ms.';

revoke all on function public.acquire(text, integer, text, integer, text [], text, text, uuid)
from public, anon, authenticated;
grant execute on function public.acquire(text, integer, text, integer, text [], text, text, uuid)
to service_role;

/*
 * queue_waiters: callers waiting on this model right now (all groups and key
 * sets): every live ticket, plus the callers without a ticket inside their
 * one-slice wait (the advisory lock holder of each queue and those behind it).
 *
 * Parameters: p_model, a google_ai_model_limits.model name.
 * Returns the count (0 when nobody waits). Raises nothing.
 * Example: select google_ai_internal.queue_waiters('gemma-3-27b');
 */
create or replace function google_ai_internal.queue_waiters(p_model text)
returns integer
language sql
stable
set search_path = ''
as $$
    select (
        select count(*)::integer
        from google_ai_internal.wait_tickets as t
        where t.model = p_model and t.alive_until > google_ai_internal.clock()
    ) + (
        select count(*)::integer
        from pg_catalog.pg_locks as pl
        where
            pl.locktype = 'advisory'
            and pl.objsubid = 2
            and pl.classid::bigint = (
                (select q.model_half from google_ai_internal.queue_lock_key(p_model, null) as q)::bigint
                & 4294967295
            )
    )
$$;

revoke all on function google_ai_internal.queue_waiters(text) from public, anon, authenticated;

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
 *      (the per-day counters keep their totals).
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
    expired_count integer := 0;
    rolled_count integer := 0;
    audit_count integer := 0;
    refusal_count integer := 0;
    minute_count integer := 0;
    log_count integer := 0;
    state_count integer := 0;
    counted jsonb;
    log_row jsonb;
    log_tables text [] := array[
        'google_ai_reservations', 'google_ai_usage_counters', 'google_ai_audit_records',
        'google_ai_refusals', 'google_ai_event_counts', 'google_ai_quota_state',
        'google_ai_maintenance_log'
    ];
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
        cfg.ledger_retention,
        google_ai_internal.window_hold(cfg),
        interval '2 days'
    );
    audit_cutoff := started - cfg.audit_retention;
    rollup_cutoff := started - greatest(cfg.rollup_retention, cfg.ledger_retention);

    with gone as (
        update public.google_ai_reservations as r
        set status = 'expired', settled_at = started
        where r.status = 'reserved' and r.lease_until <= started
        returning r.*
    )
    insert into public.google_ai_audit_records (ts, event, key_alias, model, reservation_id, details)
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
    into rolled_count, counted;
    perform google_ai_internal.count_events(counted);

    -- A window row idle for longer than the retention may point at ledger
    -- rows just deleted; drop it, the next acquire rebuilds it from the ledger.
    delete from public.google_ai_quota_state as s
    where s.swept_to < ledger_cutoff
      and (s.cooldown_until is null or s.cooldown_until < started);
    get diagnostics state_count = row_count;

    perform pg_catalog.set_config('llm_limits.trimming_audit', 'on', true);
    with old_records as (
        delete from public.google_ai_audit_records as a where a.ts < audit_cutoff
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
    into audit_count, counted;
    perform pg_catalog.set_config('llm_limits.trimming_audit', 'off', true);
    perform google_ai_internal.count_events(counted);

    with old_folds as (
        delete from public.google_ai_refusals as f where f.last_at < audit_cutoff
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
    into refusal_count, counted;
    perform google_ai_internal.count_events(counted);

    delete from public.google_ai_usage_counters as c
    where c.bucket_kind = 'minute' and c.bucket_start < rollup_cutoff;
    get diagnostics minute_count = row_count;

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
            'deleted_count',
            rolled_count + audit_count + refusal_count + minute_count + log_count + state_count,
            'started_at', started,
            'completed_at', google_ai_internal.clock(),
            'status', 'ok',
            'details', pg_catalog.jsonb_build_object(
                'leases_expired', expired_count,
                'ledger_rows_rolled_up', rolled_count,
                'audit_rows_deleted', audit_count,
                'refusal_rows_deleted', refusal_count,
                'minute_rollups_deleted', minute_count,
                'maintenance_rows_deleted', log_count,
                'window_rows_dropped', state_count,
                'ledger_cutoff', ledger_cutoff,
                'audit_cutoff', audit_cutoff,
                'rollup_cutoff', rollup_cutoff
            )
        )
    ) as p
    returning pg_catalog.to_jsonb(google_ai_maintenance_log.*) into log_row;
    return log_row;
end;
$$;

comment on function public.run_maintenance() is
'Expire leases, roll old ledger rows, audit records and folded refusals up into google_ai_usage_counters and google_ai_event_counts, trim per-minute rollups; one google_ai_maintenance_log row per run. Concurrent runs: one wins, the rest return {"status":"skipped"}.';

