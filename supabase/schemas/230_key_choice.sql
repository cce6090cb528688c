-- Key choice: which key groups may serve a request, and one try on each,
-- best first, under the window protocol (220_window_protocol.sql).

/*
 * candidates: the keys that could ever serve `p_tokens`, best first:
 * cooling-down groups last, then by priority (lower first), then by most
 * headroom (the tightest remaining fraction of any limit, read without
 * locks), then alias. A group may appear once per key; reserve_round tries
 * each group only once, on its first (best) key. A group whose TPM can never
 * hold the request is left out.
 *
 * Parameters: p_model (a google_ai_model_limits.model name), p_key_aliases
 * (null: every active key), p_now (the clock), p_tokens.
 * Returns candidate rows with their effective limits. Raises nothing.
 * Example: select * from google_ai_internal.candidates('gemma-3-27b', null, now(), 1200);
 */
create or replace function google_ai_internal.candidates(
    p_model text, p_key_aliases text [], p_now timestamptz, p_tokens integer
)
returns setof google_ai_internal.candidate
language plpgsql
stable
set search_path = ''
set plan_cache_mode = force_generic_plan
as $$
begin
    return query
    select
        g.quota_group, k.key_alias, k.env_var_name, coalesce(k.priority, 100)::integer,
        coalesce(o.rpm, m.rpm::integer),
        coalesce(o.tpm, m.tpm::integer),
        coalesce(o.rpd, m.rpd::integer)
    from public.google_ai_api_keys as k
    cross join lateral (select coalesce(k.quota_group, k.key_alias) as quota_group) as g
    inner join public.google_ai_model_limits as m on m.model = p_model
    left join public.google_ai_group_limits as o
        on o.quota_group = g.quota_group and o.model = m.model
    left join public.google_ai_quota_state as s
        on s.quota_group = g.quota_group and s.model = m.model
    where
        k.is_active is true
        and (p_key_aliases is null or k.key_alias = any(p_key_aliases))
        -- A group whose TPM can never hold the request is no candidate (its
        -- retry_after would be a promise it cannot keep).
        and coalesce(o.tpm, m.tpm::integer, p_tokens) >= p_tokens
    order by
        (s.cooldown_until > p_now) is true,
        coalesce(k.priority, 100),
        least(
            1.0 - coalesce(s.window_requests, 0)::numeric / nullif(coalesce(o.rpm, m.rpm), 0),
            1.0 - coalesce(s.window_tokens, 0)::numeric / nullif(coalesce(o.tpm, m.tpm), 0),
            1.0 - coalesce(s.day_requests, 0)::numeric / nullif(coalesce(o.rpd, m.rpd), 0)
        ) desc nulls first,
        k.key_alias;
end;
$$;

revoke all on function google_ai_internal.candidates(text, text [], timestamptz, integer)
from public, anon, authenticated;

/*
 * slots_free_at: when the request slots of a window free: the moments the
 * (p_skip + 1)-th to (p_skip + p_count)-th oldest counted grants after
 * p_swept_to leave it, oldest first. Grants of p_classes are left out
 * (null: none is), so a share of the window can be asked about too. The
 * one home of the k-th-oldest rule.
 *
 * Parameters: p_group, p_model, p_swept_to (the window's horizon), p_hold
 * (window_hold), p_skip (grants that must leave first), p_count, p_classes.
 * Returns up to p_count timestamptz, in order. Raises nothing.
 * Example: select * from google_ai_internal.slots_free_at('free-1', 'gemma-3-27b',
 *              now() - interval '61 s', interval '61 s', 0, 3, null);
 */
create or replace function google_ai_internal.slots_free_at(
    p_group text,
    p_model text,
    p_swept_to timestamptz,
    p_hold interval,
    p_skip bigint,
    p_count integer,
    p_classes text []
)
returns setof timestamptz
language plpgsql
stable
set search_path = ''
as $$
begin
    return query
    select r.granted_at + p_hold
    from public.google_ai_reservations as r
    where
        r.quota_group = p_group and r.model = p_model
        and r.granted_at > p_swept_to and r.counted_requests > 0
        and (p_classes is null or coalesce(r.caller_class <> all(p_classes), true))
    order by r.granted_at
    offset greatest(p_skip, 0) limit p_count;
end;
$$;

revoke all on function google_ai_internal.slots_free_at(
    text, text, timestamptz, interval, bigint, integer, text []
) from public, anon, authenticated;

/*
 * slot_frees_at: when the next request slot of a window frees (the first of
 * slots_free_at), or now + hold when no such grant exists (a promise on the
 * safe side).
 *
 * Parameters: as slots_free_at, without p_count.
 * Returns a timestamptz. Raises nothing.
 * Example: select google_ai_internal.slot_frees_at('free-1', 'gemma-3-27b',
 *              now() - interval '61 s', interval '61 s', 0, null);
 */
create or replace function google_ai_internal.slot_frees_at(
    p_group text,
    p_model text,
    p_swept_to timestamptz,
    p_hold interval,
    p_skip bigint,
    p_classes text []
)
returns timestamptz
language plpgsql
stable
set search_path = ''
as $$
begin
    return coalesce(
        (select min(f) from google_ai_internal.slots_free_at(
            p_group, p_model, p_swept_to, p_hold, p_skip, 1, p_classes
        ) as f),
        google_ai_internal.clock() + p_hold
    );
end;
$$;

revoke all on function google_ai_internal.slot_frees_at(
    text, text, timestamptz, interval, bigint, text []
) from public, anon, authenticated;

/*
 * tokens_free_at: when p_need input tokens of a window have freed: the
 * moment the oldest counted grants after p_swept_to that hold that many
 * tokens have left it. Grants of p_classes are left out (null: none is).
 *
 * Parameters: p_group, p_model, p_swept_to, p_hold, p_need (tokens that
 * must leave), p_classes.
 * Returns a timestamptz; now + hold when the window never frees that many.
 * Raises nothing.
 * Example: select google_ai_internal.tokens_free_at('free-1', 'gemma-3-27b',
 *              now() - interval '61 s', interval '61 s', 1200, null);
 */
create or replace function google_ai_internal.tokens_free_at(
    p_group text,
    p_model text,
    p_swept_to timestamptz,
    p_hold interval,
    p_need bigint,
    p_classes text []
)
returns timestamptz
language plpgsql
stable
set search_path = ''
as $$
begin
    return coalesce((
        select w.granted_at + p_hold
        from (
            select
                r.granted_at,
                sum(r.counted_tokens) over (order by r.granted_at, r.id) as freed
            from public.google_ai_reservations as r
            where
                r.quota_group = p_group and r.model = p_model
                and r.granted_at > p_swept_to and r.counted_tokens > 0
                and (p_classes is null or coalesce(r.caller_class <> all(p_classes), true))
        ) as w
        where w.freed >= p_need
        order by w.granted_at
        limit 1
    ), google_ai_internal.clock() + p_hold);
end;
$$;

revoke all on function google_ai_internal.tokens_free_at(
    text, text, timestamptz, interval, bigint, text []
) from public, anon, authenticated;

/*
 * higher_class_active: whether a class that ranks above p_priority was
 * granted on this window within the hold (the window row's lead), or waits
 * for the model now (a live ticket).
 *
 * Parameters: p_st, the locked window row; p_model; p_priority, the
 * caller's class priority; p_now, p_hold.
 * Returns a boolean. Raises nothing.
 * Example: select google_ai_internal.higher_class_active(st, 'gemma-3-27b', 90, now(), interval '61 s');
 */
create or replace function google_ai_internal.higher_class_active(
    p_st public.google_ai_quota_state,
    p_model text,
    p_priority integer,
    p_now timestamptz,
    p_hold interval
)
returns boolean
language plpgsql
stable
set search_path = ''
as $$
begin
    return
        (p_st.lead_at > p_now - p_hold and p_st.lead_priority < p_priority)
        or exists (
            select from google_ai_internal.wait_tickets as t
            where t.model = p_model and t.priority < p_priority and t.alive_until > p_now
        );
end;
$$;

revoke all on function google_ai_internal.higher_class_active(
    public.google_ai_quota_state, text, integer, timestamptz, interval
) from public, anon, authenticated;

/*
 * limits_free_at: the limits of a window that bind a request now, each with
 * the moment it frees: a cooldown, the day (RPD, less the day's reserves of
 * the classes above the caller's, which are never lent), RPM and TPM over
 * the exact log.
 *
 * Parameters: p_st, the locked and swept window row; p_cand; p_model (a
 * limits row name); p_tokens; p_policy; p_cfg; p_now and p_hold (as
 * lock_window read them).
 * Returns the binding limits (why) and when each frees (frees), empty when
 * none binds. Raises nothing.
 * Example: select * from google_ai_internal.limits_free_at(st, cand, 'gemma-3-27b', 1200,
 *              pol, cfg, now(), interval '61 s');
 */
create or replace function google_ai_internal.limits_free_at(
    p_st public.google_ai_quota_state,
    p_cand google_ai_internal.candidate,
    p_model text,
    p_tokens integer,
    p_policy google_ai_internal.caller_policy,
    p_cfg public.google_ai_settings,
    p_now timestamptz,
    p_hold interval,
    out why text [],
    out frees timestamptz []
)
language plpgsql
stable
set search_path = ''
as $$
begin
    why := '{}';
    frees := '{}';
    if p_st.cooldown_until > p_now then
        why := why || 'cooldown'::text;
        frees := frees || google_ai_internal.cooldown_free_at(p_st, p_now, p_cfg);
    end if;
    if p_cand.rpd is not null
        and p_st.day_requests + 1 > pg_catalog.floor(p_cand.rpd * least(p_policy.rpd_share, 1)) then
        why := why || 'rpd'::text;
        frees := frees || google_ai_internal.next_day_start(p_now, p_cfg.rpd_time_zone);
    end if;
    if p_cand.rpm is not null and p_st.window_requests + 1 > p_cand.rpm then
        why := why || 'rpm'::text;
        frees := frees || google_ai_internal.slot_frees_at(
            p_cand.quota_group, p_model, p_st.swept_to, p_hold,
            p_st.window_requests - p_cand.rpm, null
        );
    end if;
    if p_cand.tpm is not null and p_st.window_tokens + p_tokens > p_cand.tpm then
        why := why || 'tpm'::text;
        frees := frees || google_ai_internal.tokens_free_at(
            p_cand.quota_group, p_model, p_st.swept_to, p_hold,
            p_st.window_tokens + p_tokens - p_cand.tpm, null
        );
    end if;
end;
$$;

revoke all on function google_ai_internal.limits_free_at(
    public.google_ai_quota_state, google_ai_internal.candidate, text, integer,
    google_ai_internal.caller_policy, public.google_ai_settings, timestamptz, interval
) from public, anon, authenticated;

/*
 * reserves_free_at: the RPM and TPM reserves of the classes above the
 * caller's that bind a request now. A reserve is kept only while its class
 * is active here (a grant in this window, or a live waiter for the model);
 * its share of the rate is scaled up by the hold (its grants hold their
 * slots for the window plus the guard). The window's rows of the reserving
 * classes are counted from the ledger (the window's rows only).
 *
 * Parameters: as limits_free_at.
 * Returns the binding reserves (why: rpm, tpm) and when each frees (the
 * oldest grants of the classes below leave the window). Raises nothing.
 * Example: select * from google_ai_internal.reserves_free_at(st, cand, 'gemma-3-27b', 1200,
 *              pol, cfg, now(), interval '61 s');
 */
create or replace function google_ai_internal.reserves_free_at(
    p_st public.google_ai_quota_state,
    p_cand google_ai_internal.candidate,
    p_model text,
    p_tokens integer,
    p_policy google_ai_internal.caller_policy,
    p_cfg public.google_ai_settings,
    p_now timestamptz,
    p_hold interval,
    out why text [],
    out frees timestamptz []
)
language plpgsql
stable
set search_path = ''
as $$
declare
    held_per_window numeric := (p_cfg.window_ms + p_cfg.window_guard_ms)::numeric / p_cfg.window_ms;
    h record;
    share integer;
begin
    why := '{}';
    frees := '{}';
    select
        coalesce(sum(c.rpm) filter (where w.class is not null or c.waiting), 0) as rpm,
        coalesce(sum(c.tpm) filter (where w.class is not null or c.waiting), 0) as tpm,
        coalesce(sum(w.requests), 0)::bigint as requests,
        coalesce(sum(w.tokens), 0)::bigint as tokens
    into h
    from (
        select x.class, x.rpm, x.tpm, exists (
            select from google_ai_internal.wait_tickets as t
            where t.model = p_model and t.caller_class = x.class and t.alive_until > p_now
        ) as waiting
        from rows from (
            pg_catalog.unnest(p_policy.higher_classes),
            pg_catalog.unnest(p_policy.higher_rpm),
            pg_catalog.unnest(p_policy.higher_tpm)
        ) as x (class, rpm, tpm)
    ) as c
    left join (
        select r.caller_class as class, sum(r.counted_requests) as requests,
               sum(r.counted_tokens) as tokens
        from public.google_ai_reservations as r
        where
            r.quota_group = p_cand.quota_group and r.model = p_model
            and r.granted_at > p_st.swept_to and r.caller_class = any(p_policy.higher_classes)
        group by r.caller_class
    ) as w on w.class = c.class;

    share := pg_catalog.floor(p_cand.rpm * (1 - least(h.rpm * held_per_window, 1)));
    if h.rpm > 0 and p_st.window_requests - h.requests + 1 > share then
        why := why || 'rpm'::text;
        frees := frees || google_ai_internal.slot_frees_at(
            p_cand.quota_group, p_model, p_st.swept_to, p_hold,
            p_st.window_requests - h.requests - share, p_policy.higher_classes
        );
    end if;
    share := pg_catalog.floor(p_cand.tpm * (1 - least(h.tpm * held_per_window, 1)));
    if h.tpm > 0 and p_st.window_tokens - h.tokens + p_tokens > share then
        why := why || 'tpm'::text;
        frees := frees || google_ai_internal.tokens_free_at(
            p_cand.quota_group, p_model, p_st.swept_to, p_hold,
            p_st.window_tokens - h.tokens + p_tokens - share, p_policy.higher_classes
        );
    end if;
end;
$$;

revoke all on function google_ai_internal.reserves_free_at(
    public.google_ai_quota_state, google_ai_internal.candidate, text, integer,
    google_ai_internal.caller_policy, public.google_ai_settings, timestamptz, interval
) from public, anon, authenticated;

/*
 * pacing_free_at: the headroom a class that has members above the caller's
 * (p_policy.paced) is owed. A window filled in one burst frees in one burst
 * a window later, so a higher-class call that arrives in between would wait
 * for it. So, as GCRA does on top of the exact log, the caller's class is
 * paced: at most one grant per emission interval (hold / rpm, every grant
 * of any class counting, paced_until) with a burst of two, so slots free one
 * at a time. And while a higher class is active here (higher_class_active),
 * the window's last request slot stays free for it.
 *
 * Parameters: p_st, p_cand, p_model, p_policy, p_now, p_hold.
 * Returns what binds (why: rpm) and when each frees. Raises nothing.
 * Example: select * from google_ai_internal.pacing_free_at(st, cand, 'gemma-3-27b', pol,
 *              now(), interval '61 s');
 */
create or replace function google_ai_internal.pacing_free_at(
    p_st public.google_ai_quota_state,
    p_cand google_ai_internal.candidate,
    p_model text,
    p_policy google_ai_internal.caller_policy,
    p_now timestamptz,
    p_hold interval,
    out why text [],
    out frees timestamptz []
)
language plpgsql
stable
set search_path = ''
as $$
declare
    emission interval := p_hold / p_cand.rpm;
begin
    why := '{}';
    frees := '{}';
    if p_st.paced_until - emission > p_now then
        why := why || 'rpm'::text;
        frees := frees || (p_st.paced_until - emission);
    end if;
    if p_cand.rpm > 1 and p_st.window_requests + 2 > p_cand.rpm
        and google_ai_internal.higher_class_active(
            p_st, p_model, p_policy.priority, p_now, p_hold
        ) then
        why := why || 'rpm'::text;
        frees := frees || google_ai_internal.slot_frees_at(
            p_cand.quota_group, p_model, p_st.swept_to, p_hold,
            p_st.window_requests + 1 - p_cand.rpm, null
        );
    end if;
end;
$$;

revoke all on function google_ai_internal.pacing_free_at(
    public.google_ai_quota_state, google_ai_internal.candidate, text,
    google_ai_internal.caller_policy, timestamptz, interval
) from public, anon, authenticated;

/*
 * record_grant: write a grant: its ledger row (with how long its caller has
 * waited) and the window row's new totals, pacing and lead.
 *
 * Parameters: p_st, the locked window row; p_cand, p_model; p_tokens,
 * p_caller, p_request_id; p_cfg; p_policy; p_waiting_since (when the wait
 * began; null: this statement's start); p_now and p_hold.
 * Returns the reservation id. Raises nothing of its own.
 * Example: rid := google_ai_internal.record_grant(st, cand, m, 1200, 'bot', 'msg-42', cfg,
 *                     pol, null, now(), interval '61 s');
 */
create or replace function google_ai_internal.record_grant(
    p_st public.google_ai_quota_state,
    p_cand google_ai_internal.candidate,
    p_model public.google_ai_model_limits,
    p_tokens integer,
    p_caller text,
    p_request_id text,
    p_cfg public.google_ai_settings,
    p_policy google_ai_internal.caller_policy,
    p_waiting_since timestamptz,
    p_now timestamptz,
    p_hold interval
)
returns uuid
language plpgsql
volatile
set search_path = ''
as $$
declare
    st public.google_ai_quota_state := p_st;
    reservation_id uuid;
begin
    insert into public.google_ai_reservations (
        key_alias, quota_group, model, api_model, estimated_tokens, counted_tokens,
        granted_at, rpd_day, lease_until, caller, request_id, waited_ms, caller_class,
        end_user_hash
    ) values (
        p_cand.key_alias, p_cand.quota_group, p_model.model,
        coalesce(p_model.api_model, p_model.model), p_tokens, p_tokens, p_now, st.rpd_day,
        p_now + pg_catalog.make_interval(secs => p_cfg.lease_ms / 1000.0),
        p_caller, p_request_id,
        -- A WAIT began with its ticket (on the clock); otherwise acquire
        -- runs as one statement, whose start is when the caller asked.
        greatest(0, pg_catalog.round(extract(epoch from coalesce(
            p_now - p_waiting_since,
            pg_catalog.clock_timestamp() - pg_catalog.statement_timestamp()
        )) * 1000))::integer,
        p_policy.caller_class, p_policy.end_user_hash
    )
    returning id into reservation_id;

    st.window_requests := st.window_requests + 1;
    st.window_tokens := st.window_tokens + p_tokens;
    st.day_requests := st.day_requests + 1;
    if p_cand.rpm > 0 then
        st.paced_until := greatest(st.paced_until, p_now) + p_hold / p_cand.rpm;
    end if;
    if st.lead_at is null or st.lead_at <= p_now - p_hold or p_policy.priority <= st.lead_priority then
        st.lead_priority := p_policy.priority;
        st.lead_at := p_now;
    end if;
    st := google_ai_internal.outage_probe(st, p_now, p_cfg);
    perform google_ai_internal.store_window(st);
    return reservation_id;
end;
$$;

revoke all on function google_ai_internal.record_grant(
    public.google_ai_quota_state, google_ai_internal.candidate, public.google_ai_model_limits,
    integer, text, text, public.google_ai_settings, google_ai_internal.caller_policy,
    timestamptz, timestamptz, interval
) from public, anon, authenticated;

/*
 * try_reserve: one try on one candidate: lock its window, decide, and on
 * success write the grant (record_grant). On refusal nothing is written.
 * The binding limits (limits_free_at), the reserves of the classes above
 * the caller's (reserves_free_at) and the headroom a class with members
 * above is owed (pacing_free_at) each say when they free; the latest of
 * them is the truthful earliest moment to retry, computed from the ledger
 * (a release can only make it sooner). With no class above that has
 * members, a lone caller takes the whole window at once.
 *
 * Parameters: the candidate, the model row, the tokens, caller and
 * request_id, the settings, the caller's policy, p_waiting_since (when the
 * caller's wait began, its ticket's first call; null: this statement's
 * start), for the ledger row's waited_ms.
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
    p_policy google_ai_internal.caller_policy,
    p_waiting_since timestamptz,
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
    locked record;
    found_limits record;
    why text [];
    frees timestamptz [];
    free_at timestamptz;
begin
    granted := false;
    locked := google_ai_internal.lock_window(p_cand.quota_group, p_model.model, p_cfg);
    found_limits := google_ai_internal.limits_free_at(
        locked.st, p_cand, p_model.model, p_tokens, p_policy, p_cfg, locked.at_now, locked.hold
    );
    why := found_limits.why;
    frees := found_limits.frees;
    if pg_catalog.cardinality(p_policy.higher_classes) > 0 then
        found_limits := google_ai_internal.reserves_free_at(
            locked.st, p_cand, p_model.model, p_tokens, p_policy, p_cfg, locked.at_now, locked.hold
        );
        why := why || found_limits.why;
        frees := frees || found_limits.frees;
    end if;
    if p_policy.paced and p_cand.rpm > 0 then
        found_limits := google_ai_internal.pacing_free_at(
            locked.st, p_cand, p_model.model, p_policy, locked.at_now, locked.hold
        );
        why := why || found_limits.why;
        frees := frees || found_limits.frees;
    end if;

    -- The latest moment a binding limit frees is when the request could go.
    for i in 1 .. pg_catalog.cardinality(frees) loop
        if free_at is null or frees[i] > free_at then
            reason := why[i];
            free_at := frees[i];
        end if;
    end loop;
    if reason is not null then
        retry_after_ms := greatest(
            1, pg_catalog.ceil(extract(epoch from free_at - locked.at_now) * 1000)
        )::integer;
        return;
    end if;
    reservation_id := google_ai_internal.record_grant(
        locked.st, p_cand, p_model, p_tokens, p_caller, p_request_id, p_cfg, p_policy,
        p_waiting_since, locked.at_now, locked.hold
    );
    granted := true;
end;
$$;

revoke all on function google_ai_internal.try_reserve(
    google_ai_internal.candidate, public.google_ai_model_limits, integer, text, text,
    public.google_ai_settings, google_ai_internal.caller_policy, timestamptz
) from public, anon, authenticated;

/*
 * reserve_round: one round over the candidates, best first. With several
 * candidates, or when the caller will sleep afterwards
 * (p_release_on_refusal), each try is a subtransaction that is rolled back
 * on refusal, so its row lock is released before the next candidate is
 * locked (never two windows at once) and before any pg_sleep. So is a try
 * that more follows in its transaction (p_release_on_refusal: a later
 * model of a fallback chain, a wait in line). Only a single NO_WAIT try
 * that ends its walk needs no subtransaction: it locks one row, last.
 *
 * Parameters: the model row, its candidates, the tokens, caller and
 * request_id, the settings, p_release_on_refusal, the caller's policy, when
 * its wait began (try_reserve's p_waiting_since).
 * Returns the verdict: a grant, or the refusal that frees soonest (reason
 * no_key when there was no candidate). Raises nothing of its own (LL999 is
 * caught inside).
 * Example: verdict := google_ai_internal.reserve_round(
 *              wanted, cands, 1200, 'bot', 'msg-42', cfg, false, policy, null);
 */
create or replace function google_ai_internal.reserve_round(
    p_model public.google_ai_model_limits,
    p_cands google_ai_internal.candidate [],
    p_tokens integer,
    p_caller text,
    p_request_id text,
    p_cfg public.google_ai_settings,
    p_release_on_refusal boolean,
    p_policy google_ai_internal.caller_policy,
    p_waiting_since timestamptz
)
returns public.acquire_result
language plpgsql
volatile
set search_path = ''
as $$
declare
    verdict public.acquire_result;
    attempt record;
    cand google_ai_internal.candidate;
    tried text [] := '{}';
    guarded boolean := p_release_on_refusal or pg_catalog.cardinality(p_cands) > 1;
begin
    verdict.granted := false;
    verdict.model := coalesce(p_model.api_model, p_model.model);
    verdict.reason := 'no_key';
    foreach cand in array p_cands loop
        continue when cand.quota_group = any(tried);  -- keys of one group share its window
        tried := tried || cand.quota_group;
        if guarded then
            begin
                attempt := google_ai_internal.try_reserve(
                    cand, p_model, p_tokens, p_caller, p_request_id, p_cfg, p_policy,
                    p_waiting_since
                );
                if not attempt.granted then
                    raise exception using errcode = 'LL999';
                end if;
            exception when sqlstate 'LL999' then
                null;  -- rolled back: the window row is unlocked again
            end;
        else
            attempt := google_ai_internal.try_reserve(
                cand, p_model, p_tokens, p_caller, p_request_id, p_cfg, p_policy, p_waiting_since
            );
        end if;
        if attempt.granted then
            verdict.granted := true;
            verdict.reservation_id := attempt.reservation_id;
            verdict.key_alias := cand.key_alias;
            verdict.env_var_name := cand.env_var_name;
            verdict.reason := null;
            verdict.retry_after_ms := null;
            return verdict;
        end if;
        -- Report the refusal that frees soonest: that is when to retry.
        if verdict.retry_after_ms is null or attempt.retry_after_ms < verdict.retry_after_ms then
            verdict.reason := attempt.reason;
            verdict.retry_after_ms := attempt.retry_after_ms;
            verdict.key_alias := cand.key_alias;
        end if;
    end loop;
    return verdict;
end;
$$;

revoke all on function google_ai_internal.reserve_round(
    public.google_ai_model_limits, google_ai_internal.candidate [], integer, text, text,
    public.google_ai_settings, boolean, google_ai_internal.caller_policy, timestamptz
) from public, anon, authenticated;
