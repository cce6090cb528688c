-- The bot's users first (issue 23): headroom for a higher class that has
-- members (lower classes paced, GCRA on top of the exact log, and the
-- window's last slot kept free while the class above is active), aging that
-- only lifts a starving class, fallback in time (a class's
-- fallback_after_ms), and queue feedback (queue_position, expected_wait_ms
-- on a queued answer). Written from supabase/schemas (010, 140, 152, 160,
-- 175, 230, 235, 240, 300).
--
-- Lock order: unchanged (220_window_protocol.sql).

alter table public.google_ai_caller_classes
add column fallback_after_ms integer check (fallback_after_ms between 0 and 86400000);

comment on column public.google_ai_caller_classes.fallback_after_ms is
'With may_fall_back: how long a WAIT may wait for the model asked for before a model of its fallback chain that can grant at once serves it (null: only when the model asked for refuses).';

-- A person waits at most about two seconds for the model asked for while a
-- fallback could answer at once.
update public.google_ai_caller_classes set fallback_after_ms = 2000
where name = 'interactive' and fallback_after_ms is null;

alter type public.acquire_result
add attribute queue_position integer,
add attribute expected_wait_ms integer;

comment on type public.acquire_result is
'Verdict of acquire(): a grant (reservation_id, key) or a refusal (reason, retry_after_ms); while queued, the place in line and the expected wait.';

alter type google_ai_internal.caller_policy add attribute fallback_after_ms integer;

comment on column public.google_ai_settings.aging_ms is
'Aging of the WAIT queues: a class whose waiter has waited this long while the class was granted nothing on the model for this long goes to the top (one grant per aging_ms), so no class starves; under an ordinary load classes keep their order.';

comment on column google_ai_internal.wait_tickets.priority is
'The waiter''s class priority when it joined (lower is served first; a starving class''s old waiters go first, see queue_rank).';

-- New signatures: the old ones go.
drop function google_ai_internal.try_reserve(
    google_ai_internal.candidate, public.google_ai_model_limits, integer, text, text,
    public.google_ai_settings, google_ai_internal.caller_policy
);
drop function google_ai_internal.reserve_round(
    public.google_ai_model_limits, google_ai_internal.candidate [], integer, text, text,
    public.google_ai_settings, boolean, google_ai_internal.caller_policy
);
drop function google_ai_internal.queue_rank(integer, timestamptz, timestamptz, integer);
drop function google_ai_internal.wait_in_line(
    uuid, public.google_ai_model_limits, text [], integer, text, text, integer,
    public.google_ai_settings, timestamptz, google_ai_internal.caller_policy
);
drop function google_ai_internal.acquire_on(
    public.google_ai_model_limits, integer, boolean, integer, text [], text, text, uuid,
    public.google_ai_settings, timestamptz, google_ai_internal.caller_policy
);

/*
 * slot_frees_at: when a request slot of a window frees: the moment the
 * (p_skip + 1)-th oldest counted grant after p_swept_to leaves it. Grants of
 * p_classes are left out (null: none is), so a share of the window can be
 * asked about too.
 *
 * Parameters: p_group, p_model, p_swept_to (the window's horizon), p_hold
 * (window_hold), p_skip (grants that must leave first), p_classes.
 * Returns a timestamptz; now + hold when no such grant exists (a promise on
 * the safe side). Raises nothing.
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
language sql
stable
set search_path = ''
as $$
    select coalesce((
        select r.granted_at + p_hold
        from public.google_ai_reservations as r
        where
            r.quota_group = p_group and r.model = p_model
            and r.granted_at > p_swept_to and r.counted_requests > 0
            and (p_classes is null or coalesce(r.caller_class <> all(p_classes), true))
        order by r.granted_at
        offset greatest(p_skip, 0) limit 1
    ), google_ai_internal.clock() + p_hold)
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
language sql
stable
set search_path = ''
as $$
    select coalesce((
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
    ), google_ai_internal.clock() + p_hold)
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
language sql
stable
set search_path = ''
as $$
    select
        (p_st.lead_at > p_now - p_hold and p_st.lead_priority < p_priority)
        or exists (
            select from google_ai_internal.wait_tickets as t
            where t.model = p_model and t.priority < p_priority and t.alive_until > p_now
        )
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
        frees := frees || p_st.cooldown_until;
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
        granted_at, rpd_day, lease_until, caller, request_id, waited_ms, caller_class
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
        p_policy.caller_class
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
 * locked (never two windows at once) and before any pg_sleep. A single
 * NO_WAIT try needs no subtransaction: it locks one row only.
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

/*
 * caller_policy: the policy acquire() applies to a caller. A session whose
 * login is some policy row's login_role acts as that row's caller, whatever
 * name it passed; a name no row holds is in class `default` (priority 50, no
 * fallback, should that row be gone). The policy is paced (try_reserve)
 * when a class above it has members: a caller of that class may arrive at
 * any moment, so the window must not be filled in one burst.
 *
 * Parameters: p_caller, acquire's caller argument (may be null).
 * Returns one caller_policy. Raises nothing.
 * Example: select * from google_ai_internal.caller_policy('telegram-bot');
 */
create or replace function google_ai_internal.caller_policy(p_caller text)
returns google_ai_internal.caller_policy
language plpgsql
stable
set search_path = ''
as $$
declare
    pol google_ai_internal.caller_policy;
begin
    select p.caller into pol.caller
    from public.google_ai_caller_policies as p
    where p.login_role = session_user;
    pol.caller := coalesce(pol.caller, p_caller);
    select c.name, c.priority, c.may_fall_back, c.fallback_after_ms
    into pol.caller_class, pol.priority, pol.may_fall_back, pol.fallback_after_ms
    from public.google_ai_caller_classes as c
    where c.name = coalesce(
        (select p.caller_class from public.google_ai_caller_policies as p where p.caller = pol.caller),
        'default'
    );
    if pol.caller_class is null then
        pol.caller_class := 'default';
        pol.priority := 50;
        pol.may_fall_back := false;
    end if;
    select
        coalesce(pg_catalog.array_agg(c.name order by c.name)
            filter (where c.rpm_reserve > 0 or c.tpm_reserve > 0), '{}'),
        coalesce(pg_catalog.array_agg(c.rpm_reserve order by c.name)
            filter (where c.rpm_reserve > 0 or c.tpm_reserve > 0), '{}'),
        coalesce(pg_catalog.array_agg(c.tpm_reserve order by c.name)
            filter (where c.rpm_reserve > 0 or c.tpm_reserve > 0), '{}'),
        1 - coalesce(sum(c.rpd_reserve), 0),
        coalesce(bool_or(exists (
            select from public.google_ai_caller_policies as p where p.caller_class = c.name
        )), false)
    into pol.higher_classes, pol.higher_rpm, pol.higher_tpm, pol.rpd_share, pol.paced
    from public.google_ai_caller_classes as c
    where c.priority < pol.priority;
    return pol;
end;
$$;

revoke all on function google_ai_internal.caller_policy(text) from public, anon, authenticated;

/*
 * starving_classes: the classes of a queue that aging lifts to the top: a
 * class is starving when it has a waiter that has waited aging_ms and the
 * class was granted nothing on the model's candidate groups within aging_ms.
 * So aging only acts when the classes above take the whole limit; under an
 * ordinary load every class is granted now and then, and the classes keep
 * their order. A starving class is served one grant per aging_ms.
 *
 * Parameters: p_model and p_key_set (the queue), p_groups (its candidate
 * quota groups), p_now, p_aging_ms (google_ai_settings.aging_ms).
 * Returns the class names (empty when none starves). Raises nothing.
 * Example: select google_ai_internal.starving_classes('gemma-3-27b', md5('*'),
 *              array['free-1'], now(), 60000);
 */
create or replace function google_ai_internal.starving_classes(
    p_model text, p_key_set text, p_groups text [], p_now timestamptz, p_aging_ms integer
)
returns text []
language sql
stable
set search_path = ''
as $$
    select coalesce(pg_catalog.array_agg(distinct t.caller_class), '{}')
    from google_ai_internal.wait_tickets as t
    where
        t.model = p_model and t.key_set = p_key_set and t.alive_until > p_now
        and t.created_at <= p_now - pg_catalog.make_interval(secs => p_aging_ms / 1000.0)
        and not exists (
            select from public.google_ai_reservations as r
            where
                r.quota_group = any(p_groups) and r.model = p_model
                and r.granted_at > p_now - pg_catalog.make_interval(secs => p_aging_ms / 1000.0)
                and r.caller_class = t.caller_class
        )
$$;

revoke all on function google_ai_internal.starving_classes(text, text, text [], timestamptz, integer)
from public, anon, authenticated;

/*
 * queue_rank: where a waiter stands in its queue: its class priority, or 0
 * (the top) once it has waited aging_ms in a starving class
 * (starving_classes). Ties go by ticket order (seq).
 *
 * Parameters: p_ticket, the waiter; p_starving, the queue's starving
 * classes; p_now; p_aging_ms.
 * Returns the rank (lower is served first). Raises nothing.
 * Example: select google_ai_internal.queue_rank(t, '{batch}', now(), 60000)
 *          from google_ai_internal.wait_tickets as t;
 */
create or replace function google_ai_internal.queue_rank(
    p_ticket google_ai_internal.wait_tickets,
    p_starving text [],
    p_now timestamptz,
    p_aging_ms integer
)
returns integer
language sql
immutable
set search_path = ''
as $$
    select case
        when p_ticket.caller_class = any(p_starving)
            and p_ticket.created_at <= p_now - pg_catalog.make_interval(secs => p_aging_ms / 1000.0)
            then 0
        else p_ticket.priority
    end
$$;

revoke all on function google_ai_internal.queue_rank(
    google_ai_internal.wait_tickets, text [], timestamptz, integer
) from public, anon, authenticated;

/*
 * line_ahead: who is ahead of a waiter in its queue: the live tickets of
 * the same model and key set that rank before it (queue_rank, then seq)
 * and still hold their place (their owner is in a call, or is less than
 * the grace late). The one definition of "ahead".
 *
 * Parameters: p_me, the waiter's ticket; p_starving; p_now; p_grace
 * (wait_ticket_grace_ms); p_aging_ms.
 * Returns how many are ahead, their tokens, the nearest one and the head of
 * the line (both null when the waiter is the head). Raises nothing.
 * Example: select * from google_ai_internal.line_ahead(me, '{}', now(), interval '1 s', 60000);
 */
create or replace function google_ai_internal.line_ahead(
    p_me google_ai_internal.wait_tickets,
    p_starving text [],
    p_now timestamptz,
    p_grace interval,
    p_aging_ms integer,
    out ahead integer,
    out ahead_tokens bigint,
    out nearest uuid,
    out head uuid
)
language sql
volatile
set search_path = ''
as $$
    select
        count(*)::integer,
        coalesce(sum(x.tokens), 0)::bigint,
        (pg_catalog.array_agg(x.id order by x.rank desc, x.seq desc))[1],
        (pg_catalog.array_agg(x.id order by x.rank, x.seq))[1]
    from (
        select
            t.id, t.tokens, t.seq, t.due_at,
            google_ai_internal.queue_rank(t, p_starving, p_now, p_aging_ms) as rank
        from google_ai_internal.wait_tickets as t
        where
            t.model = p_me.model and t.key_set = p_me.key_set and t.id <> p_me.id
            and t.alive_until > p_now
    ) as x
    where
        (x.rank, x.seq)
        < (google_ai_internal.queue_rank(p_me, p_starving, p_now, p_aging_ms), p_me.seq)
        and (x.due_at + p_grace > p_now or google_ai_internal.ticket_in_call(x.id))
$$;

revoke all on function google_ai_internal.line_ahead(
    google_ai_internal.wait_tickets, text [], timestamptz, interval, integer
) from public, anon, authenticated;

/*
 * take_place: a WAIT call's ticket, locked for the call: the caller's
 * place, or a new one at the tail of the queue (model, key set). Expired
 * places are swept first, whoever sweeps them. A ticket of another queue
 * (the caller changed its model or keys) starts again at this queue's tail.
 * A new ticket's deadline is its insert plus max_wait_ms (real time, like
 * every deadline here, so waited_ms reaches max_wait_ms at the deadline).
 *
 * Parameters: p_ticket; p_model (a limits row name) and p_key_set (the
 * queue); the tokens, caller and request_id the ticket records;
 * p_max_wait_ms; the settings; the caller's policy (class and priority).
 * Returns the locked ticket and whether this call made it. Raises nothing.
 * Example: select * from google_ai_internal.take_place(gen_random_uuid(), 'gemma-3-27b',
 *              md5('*'), 100, 'bot', 'r1', 5000, cfg, pol);
 */
create or replace function google_ai_internal.take_place(
    p_ticket uuid,
    p_model text,
    p_key_set text,
    p_tokens integer,
    p_caller text,
    p_request_id text,
    p_max_wait_ms integer,
    p_cfg public.google_ai_settings,
    p_policy google_ai_internal.caller_policy,
    out ticket google_ai_internal.wait_tickets,
    out fresh boolean
)
language plpgsql
volatile
set search_path = ''
as $$
declare
    at_now timestamptz := google_ai_internal.clock();
begin
    fresh := false;
    delete from google_ai_internal.wait_tickets as t
    where t.id in (
        select x.id from google_ai_internal.wait_tickets as x
        where x.alive_until < at_now
        for update skip locked
    );
    select t.* into ticket from google_ai_internal.wait_tickets as t where t.id = p_ticket for update;
    if ticket.id is not null and (ticket.model <> p_model or ticket.key_set <> p_key_set) then
        delete from google_ai_internal.wait_tickets as t where t.id = p_ticket;
        ticket := null;
    end if;
    if ticket.id is not null then
        return;
    end if;
    -- Read again: the place's time must follow the sweep and the lock, as its seq does.
    at_now := google_ai_internal.clock();
    insert into google_ai_internal.wait_tickets as t (
        id, model, key_set, tokens, caller, request_id, created_at, due_at, turn_at,
        alive_until, deadline, priority, caller_class
    ) values (
        p_ticket, p_model, p_key_set, p_tokens, p_caller, p_request_id, at_now, at_now, at_now,
        at_now + pg_catalog.make_interval(
            secs => (p_cfg.wait_slice_ms + p_cfg.wait_ticket_grace_ms) / 1000.0
        ),
        pg_catalog.clock_timestamp() + pg_catalog.make_interval(secs => p_max_wait_ms / 1000.0),
        p_policy.priority, p_policy.caller_class
    )
    -- A retry after a lost connection may race the call it replaces.
    on conflict (id) do nothing
    returning t.* into ticket;
    if ticket.id is null then
        select t.* into ticket
        from google_ai_internal.wait_tickets as t where t.id = p_ticket for update;
    else
        fresh := true;
    end if;
end;
$$;

revoke all on function google_ai_internal.take_place(
    uuid, text, text, integer, text, text, integer, public.google_ai_settings,
    google_ai_internal.caller_policy
) from public, anon, authenticated;

/*
 * wait_for_ticket: wait until the call that holds a ticket's row lock ends
 * (its owner is granted, or its slice is over), or until p_until. Row locks
 * end only with their (sub)transaction, so the lock is taken in a
 * subtransaction that this function rolls back at once by raising LL999 to
 * itself; the lock_timeout it sets is undone with it.
 *
 * Parameters: p_ticket, the one ahead; p_until, the end of the caller's slice.
 * Returns nothing. Raises nothing (LL999 and lock_not_available are caught).
 * Example: perform google_ai_internal.wait_for_ticket(pred.id, clock_timestamp() + interval '2 s');
 */
create or replace function google_ai_internal.wait_for_ticket(p_ticket uuid, p_until timestamptz)
returns void
language plpgsql
volatile
set search_path = ''
as $$
begin
    perform pg_catalog.set_config('lock_timeout', greatest(1, pg_catalog.ceil(
        extract(epoch from p_until - pg_catalog.clock_timestamp()) * 1000
    ))::text || 'ms', true);
    perform 1 from google_ai_internal.wait_tickets as t where t.id = p_ticket for update;
    raise exception using errcode = 'LL999';
exception
    when sqlstate 'LL999' or lock_not_available then null;
end;
$$;

revoke all on function google_ai_internal.wait_for_ticket(uuid, timestamptz)
from public, anon, authenticated;

/*
 * head_try: one try of the head of a queue (nobody live ahead of it), and
 * what follows: granted (or no key), refused for good (the deadline has
 * come, or a cooldown or a spent day outlasts it), told to call back
 * ('queued': at once when this call may not stay, or a recheck before a
 * cooldown or a day ends), or a short sleep in the database before the next
 * try (exactly when the window frees, or after wait_recheck_ms to catch a
 * release; no row lock is held: reserve_round rolled its try back).
 *
 * Parameters: the model row, its candidates, the tokens, caller, request_id,
 * settings and policy, when the wait began, the ms left until the deadline,
 * whether this call may stay (not the ticket's first call, slice not over),
 * and the end of its slice.
 * Returns the verdict, the expected turn and the hint to call back after
 * (while queued), and whether the call is done (false: look again).
 * Raises nothing.
 * Example: select * from google_ai_internal.head_try(m, cands, 100, 'bot', 'r1', cfg, pol,
 *              now(), 5000, true, clock_timestamp() + interval '2 s');
 */
create or replace function google_ai_internal.head_try(
    p_model public.google_ai_model_limits,
    p_cands google_ai_internal.candidate [],
    p_tokens integer,
    p_caller text,
    p_request_id text,
    p_cfg public.google_ai_settings,
    p_policy google_ai_internal.caller_policy,
    p_waiting_since timestamptz,
    p_remaining_ms double precision,
    p_may_stay boolean,
    p_slice_end timestamptz,
    out verdict public.acquire_result,
    out turn timestamptz,
    out hint_ms double precision,
    out done boolean
)
language plpgsql
volatile
set search_path = ''
as $$
begin
    done := true;
    verdict := google_ai_internal.reserve_round(
        p_model, p_cands, p_tokens, p_caller, p_request_id, p_cfg, true, p_policy,
        p_waiting_since
    );
    if verdict.granted or verdict.reason = 'no_key' then
        return;
    elsif p_remaining_ms <= 0 then
        verdict.reason := 'wait_timeout';
        return;
    elsif verdict.reason in ('rpd', 'cooldown') and verdict.retry_after_ms > p_remaining_ms then
        return;  -- nothing but time frees a cooldown or a day
    end if;
    turn := google_ai_internal.clock()
        + pg_catalog.make_interval(secs => verdict.retry_after_ms / 1000.0);
    if verdict.reason in ('rpd', 'cooldown') then
        hint_ms := verdict.retry_after_ms - p_cfg.wait_recheck_ms;
        verdict.reason := 'queued';
    elsif not p_may_stay or pg_catalog.clock_timestamp() >= p_slice_end then
        hint_ms := 0;
        verdict.reason := 'queued';
    else
        perform pg_catalog.pg_sleep(least(
            verdict.retry_after_ms, p_cfg.wait_recheck_ms, p_remaining_ms,
            extract(epoch from p_slice_end - pg_catalog.clock_timestamp()) * 1000
        ) / 1000.0);
        done := false;
    end if;
end;
$$;

revoke all on function google_ai_internal.head_try(
    public.google_ai_model_limits, google_ai_internal.candidate [], integer, text, text,
    public.google_ai_settings, google_ai_internal.caller_policy, timestamptz,
    double precision, boolean, timestamptz
) from public, anon, authenticated;

/*
 * turn_behind: when a waiter behind others (p_pred the nearest one ahead,
 * p_ahead and p_ahead_tokens all of them) could be served, and what it does
 * now: told to call back when its turn is expected, less one
 * wait_recheck_ms, so it sleeps without a connection; or, once due and while
 * the one ahead is in a call, wait for that call to end (done false: the
 * caller waits on its ticket). It never sleeps past the moment the one ahead
 * would be found gone (one slice plus the grace while that one is in a call,
 * its due time plus the grace otherwise), and backs off by how late the one
 * ahead is when it is due but the one ahead is not here.
 *
 * Parameters: the model row, its candidates, the tokens, the settings, the
 * one ahead, how many are ahead and their tokens, the ms left until the
 * deadline, whether this call may stay, the end of its slice.
 * Returns the reason (queued or wait_timeout), retry_after_ms (when the turn
 * is expected), the turn, the hint and whether the call is done.
 * Raises nothing.
 * Example: select * from google_ai_internal.turn_behind(m, cands, 100, cfg, pred, 2, 200,
 *              5000, true, clock_timestamp() + interval '2 s');
 */
create or replace function google_ai_internal.turn_behind(
    p_model public.google_ai_model_limits,
    p_cands google_ai_internal.candidate [],
    p_tokens integer,
    p_cfg public.google_ai_settings,
    p_pred google_ai_internal.wait_tickets,
    p_ahead integer,
    p_ahead_tokens bigint,
    p_remaining_ms double precision,
    p_may_stay boolean,
    p_slice_end timestamptz,
    out reason text,
    out retry_after_ms integer,
    out turn timestamptz,
    out hint_ms double precision,
    out done boolean
)
language plpgsql
volatile
set search_path = ''
as $$
declare
    at_now timestamptz := google_ai_internal.clock();
    grace interval := pg_catalog.make_interval(secs => p_cfg.wait_ticket_grace_ms / 1000.0);
    present boolean;
begin
    done := true;
    turn := greatest(
        google_ai_internal.turn_estimate(
            p_model, p_cands, p_ahead, p_ahead_tokens, p_tokens, p_cfg
        ),
        p_pred.turn_at
    );
    retry_after_ms := greatest(1, pg_catalog.ceil(extract(epoch from turn - at_now) * 1000))::integer;
    if p_remaining_ms <= 0 then
        reason := 'wait_timeout';
        return;
    end if;
    reason := 'queued';
    hint_ms := extract(epoch from turn - at_now) * 1000 - p_cfg.wait_recheck_ms;
    present := google_ai_internal.ticket_in_call(p_pred.id);
    if hint_ms <= 0 and present and p_may_stay and pg_catalog.clock_timestamp() < p_slice_end then
        done := false;
        return;
    end if;
    if hint_ms <= 0 and not present then
        hint_ms := greatest(
            p_cfg.wait_recheck_ms, pg_catalog.abs(extract(epoch from at_now - p_pred.due_at)) * 1000
        );
    end if;
    hint_ms := greatest(p_cfg.wait_recheck_ms, least(
        hint_ms,
        case
            when present then p_cfg.wait_slice_ms + p_cfg.wait_ticket_grace_ms
            else extract(epoch from p_pred.due_at + grace - at_now) * 1000
        end
    ));
end;
$$;

revoke all on function google_ai_internal.turn_behind(
    public.google_ai_model_limits, google_ai_internal.candidate [], integer,
    public.google_ai_settings, google_ai_internal.wait_tickets, integer, bigint,
    double precision, boolean, timestamptz
) from public, anon, authenticated;

/*
 * keep_place: a 'queued' answer's place, kept: the ticket is told to call
 * back after p_hint_ms (never past p_yield_at or the deadline) and stays
 * alive for a slice and the grace after that; the verdict says where the
 * waiter stands (queue_position, expected_wait_ms) and when to call back.
 *
 * Parameters: p_verdict (queued), p_ticket, p_hint_ms, p_turn (the expected
 * turn), p_ahead, p_remaining_ms, p_yield_at, p_rounds, the settings.
 * Returns the verdict to answer. Raises nothing.
 * Example: verdict := google_ai_internal.keep_place(verdict, me.id, 500, turn, 2, 5000,
 *                         null, 3, cfg);
 */
create or replace function google_ai_internal.keep_place(
    p_verdict public.acquire_result,
    p_ticket uuid,
    p_hint_ms double precision,
    p_turn timestamptz,
    p_ahead integer,
    p_remaining_ms double precision,
    p_yield_at timestamptz,
    p_rounds integer,
    p_cfg public.google_ai_settings
)
returns public.acquire_result
language plpgsql
volatile
set search_path = ''
as $$
declare
    verdict public.acquire_result := p_verdict;
    at_now timestamptz := google_ai_internal.clock();
    hint_ms double precision := p_hint_ms;
begin
    if p_yield_at > at_now then
        hint_ms := least(hint_ms, extract(epoch from p_yield_at - at_now) * 1000);
    end if;
    hint_ms := greatest(0, least(hint_ms, p_remaining_ms));
    verdict.key_alias := null;
    verdict.reservation_id := null;
    verdict.retry_after_ms := pg_catalog.ceil(hint_ms)::integer;
    verdict.queue_position := coalesce(p_ahead, 0) + 1;
    verdict.expected_wait_ms := greatest(0, pg_catalog.ceil(
        extract(epoch from coalesce(p_turn, at_now) - at_now) * 1000
    ))::integer;
    update google_ai_internal.wait_tickets as t
    set
        due_at = at_now + pg_catalog.make_interval(secs => hint_ms / 1000.0),
        turn_at = coalesce(p_turn, at_now),
        alive_until = at_now + pg_catalog.make_interval(
            secs => (hint_ms + p_cfg.wait_slice_ms + p_cfg.wait_ticket_grace_ms) / 1000.0
        ),
        rounds = p_rounds
    where t.id = p_ticket;
    return verdict;
end;
$$;

revoke all on function google_ai_internal.keep_place(
    public.acquire_result, uuid, double precision, timestamptz, integer, double precision,
    timestamptz, integer, public.google_ai_settings
) from public, anon, authenticated;

/*
 * wait_in_line: one call of a WAIT that holds a ticket (a place in the
 * queue of its model and key set, kept between calls). The queue is served
 * by rank (queue_rank: class priority; a starving class's old waiters
 * first), then ticket order; "ahead" is line_ahead.
 *
 * The first call with a new ticket takes the place at the tail, fixes the
 * wait's deadline (that call's start plus max_wait_ms; a later call's
 * max_wait_ms can only bring it closer) and, unless it is granted at once,
 * returns so that the place is committed (others cannot see it before).
 * Later calls:
 *   - the head (no live ticket ahead) stays in the database for the slice,
 *     re-trying exactly when the window frees and every wait_recheck_ms (to
 *     catch releases), then answers 'queued' with retry_after_ms 0: call
 *     back at once;
 *   - a waiter behind others answers 'queued' at once with retry_after_ms =
 *     when its turn is expected (turn_estimate, or the time the one ahead
 *     expects its own), less one wait_recheck_ms, so it sleeps without a
 *     connection; once due it waits in the database for the call of the one
 *     ahead to end (its ticket row lock; so during a burst of freed slots the
 *     waiters present form a chain behind the head), for the rest of its
 *     slice at most, and never for one ahead that is not in the database (it
 *     backs off by how late that one is);
 *   - a waiter behind others whose request fits now without delaying the
 *     head's own grant is served at once (backfill_group);
 *   - at the deadline the head tries once more; anyone not granted then is
 *     refused 'wait_timeout' with a truthful retry_after_ms.
 * p_yield_after_ms (acquire's fallback_after_ms, when a fallback exists):
 * until that long after the ticket's first call, no call lasts or sleeps
 * past that moment, so acquire can try the fallback then.
 * A 'queued' answer says the waiter's place (queue_position, 1 = next) and
 * when its turn is expected (expected_wait_ms).
 * A ticket ahead counts while its owner is in a call, or until
 * wait_ticket_grace_ms after the moment it was told to call back: a killed
 * or disconnected owner stops holding the line about a second after it
 * missed its turn. A waiter never sleeps past the moment the one ahead of it
 * would be found gone (one slice plus the grace while that one is in a
 * call), so the line moves on within a few seconds.
 * A grant or a final refusal deletes the ticket; 'queued' refreshes it.
 *
 * Parameters: acquire's ticket, model row, key_aliases, tokens, caller,
 * request_id, max_wait_ms (used by the ticket's first call, and by tickets
 * made before the deadline was stored), the settings, when the call
 * started, the caller's policy, p_yield_after_ms.
 * Returns the verdict (waited_ms counted from the ticket's first call) and
 * the number of looks at the queue over the whole wait. Raises nothing.
 * Example: select * from google_ai_internal.wait_in_line(
 *              gen_random_uuid(), m, null, 100, 'bot', 'r1', 5000, cfg, clock_timestamp(),
 *              google_ai_internal.caller_policy('bot'), null);
 */
create or replace function google_ai_internal.wait_in_line(
    p_ticket uuid,
    p_model public.google_ai_model_limits,
    p_key_aliases text [],
    p_tokens integer,
    p_caller text,
    p_request_id text,
    p_max_wait_ms integer,
    p_cfg public.google_ai_settings,
    p_started timestamptz,
    p_policy google_ai_internal.caller_policy,
    p_yield_after_ms integer,
    out verdict public.acquire_result,
    out rounds integer
)
language plpgsql
volatile
set search_path = ''
set plan_cache_mode = force_generic_plan
as $$
declare
    placed record;
    me google_ai_internal.wait_tickets;
    deadline timestamptz;
    slice_end timestamptz;
    yield_at timestamptz;
    cands google_ai_internal.candidate [];
    line record;
    step record;
    pred google_ai_internal.wait_tickets;
    backfill text;
    remaining_ms double precision;
begin
    placed := google_ai_internal.take_place(
        p_ticket, p_model.model, google_ai_internal.queue_key_set(p_key_aliases), p_tokens,
        p_caller, p_request_id, p_max_wait_ms, p_cfg, p_policy
    );
    me := placed.ticket;
    -- The wait ends at the ticket's deadline, fixed by its first call, or
    -- sooner when this call's max_wait_ms says so (a caller that counts down
    -- its own wait, or gives up with 0).
    deadline := least(
        me.deadline, p_started + pg_catalog.make_interval(secs => p_max_wait_ms / 1000.0)
    );
    yield_at := me.created_at + pg_catalog.make_interval(secs => p_yield_after_ms / 1000.0);
    slice_end := least(
        deadline, p_started + pg_catalog.make_interval(secs => p_cfg.wait_slice_ms / 1000.0),
        case when yield_at > p_started then yield_at end
    );
    rounds := me.rounds;
    loop
        rounds := rounds + 1;
        cands := array(select c from google_ai_internal.candidates(
            p_model.model, p_key_aliases, google_ai_internal.clock(), p_tokens
        ) as c);
        line := google_ai_internal.line_ahead(
            me,
            google_ai_internal.starving_classes(
                me.model, me.key_set,
                array(select distinct c.quota_group from pg_catalog.unnest(cands) as c),
                google_ai_internal.clock(), p_cfg.aging_ms
            ),
            google_ai_internal.clock(),
            pg_catalog.make_interval(secs => p_cfg.wait_ticket_grace_ms / 1000.0),
            p_cfg.aging_ms
        );
        remaining_ms := extract(epoch from deadline - pg_catalog.clock_timestamp()) * 1000;
        if line.nearest is null then
            step := google_ai_internal.head_try(
                p_model, cands, p_tokens, p_caller, p_request_id, p_cfg, p_policy,
                me.created_at, remaining_ms, not placed.fresh, slice_end
            );
            verdict := step.verdict;
        else
            select t.* into pred from google_ai_internal.wait_tickets as t where t.id = line.head;
            backfill := google_ai_internal.backfill_group(
                pred, p_tokens, cands, p_model.model, p_cfg, google_ai_internal.clock()
            );
            if backfill is not null then
                verdict := google_ai_internal.reserve_round(
                    p_model, array(select c from pg_catalog.unnest(cands) as c
                                   where c.quota_group = backfill),
                    p_tokens, p_caller, p_request_id, p_cfg, true, p_policy, me.created_at
                );
                exit when verdict.granted;
            end if;
            select t.* into pred from google_ai_internal.wait_tickets as t where t.id = line.nearest;
            step := google_ai_internal.turn_behind(
                p_model, cands, p_tokens, p_cfg, pred, line.ahead, line.ahead_tokens,
                remaining_ms, not placed.fresh, slice_end
            );
            verdict := null;
            verdict.granted := false;
            verdict.model := coalesce(p_model.api_model, p_model.model);
            verdict.reason := step.reason;
            verdict.retry_after_ms := step.retry_after_ms;
            -- Due, and the one ahead is in a call: wait for it to end.
            if not step.done then
                perform google_ai_internal.wait_for_ticket(pred.id, slice_end);
            end if;
        end if;
        exit when step.done;
    end loop;

    if verdict.reason = 'queued' then
        verdict := google_ai_internal.keep_place(
            verdict, me.id, step.hint_ms, step.turn, line.ahead, remaining_ms, yield_at, rounds,
            p_cfg
        );
    else
        delete from google_ai_internal.wait_tickets as t where t.id = me.id;
    end if;
    verdict.waited_ms := pg_catalog.round(
        extract(epoch from google_ai_internal.clock() - me.created_at) * 1000
    )::integer;
end;
$$;

revoke all on function google_ai_internal.wait_in_line(
    uuid, public.google_ai_model_limits, text [], integer, text, text, integer,
    public.google_ai_settings, timestamptz, google_ai_internal.caller_policy, integer
) from public, anon, authenticated;

/*
 * acquire_on: acquire()'s work on one model of its fallback chain: the
 * candidates (LL003 when the request can never fit), then a WAIT in line
 * (wait_in_line) or one NO_WAIT try. Records nothing: acquire() records the
 * call's one verdict.
 *
 * Parameters: the model row, acquire's tokens, whether it waits, its
 * max_wait_ms, key_aliases, caller (after a login pin), request_id and
 * ticket, the settings, when the call started, the caller's policy, and
 * p_yield_after_ms (wait_in_line's).
 * Returns the verdict (ticket set for a WAIT) and the rounds it took.
 * Raises: LL003 tokens > every TPM that applies.
 * Example: select * from google_ai_internal.acquire_on(m, 100, true, 5000, null,
 *              'bot', 'r1', null, cfg, clock_timestamp(), pol, null);
 */
create or replace function google_ai_internal.acquire_on(
    p_model public.google_ai_model_limits,
    p_tokens integer,
    p_wait boolean,
    p_max_wait_ms integer,
    p_key_aliases text [],
    p_caller text,
    p_request_id text,
    p_ticket uuid,
    p_cfg public.google_ai_settings,
    p_started timestamptz,
    p_policy google_ai_internal.caller_policy,
    p_yield_after_ms integer,
    out verdict public.acquire_result,
    out rounds integer
)
language plpgsql
volatile
set search_path = ''
set plan_cache_mode = force_generic_plan
as $$
declare
    cands google_ai_internal.candidate [];
    in_line record;
    biggest_tpm integer;
    unlimited boolean;
    place uuid;
begin
    cands := array(
        select c
        from google_ai_internal.candidates(
            p_model.model, p_key_aliases, google_ai_internal.clock(), p_tokens
        ) as c
    );
    if pg_catalog.cardinality(cands) = 0 then
        -- No candidate: either no usable key (a refusal) or a request larger
        -- than every TPM that applies (bad input: it can never be granted).
        select
            coalesce(max(coalesce(o.tpm, p_model.tpm::integer)), p_model.tpm::integer),
            coalesce(bool_or(coalesce(o.tpm, p_model.tpm::integer) is null), p_model.tpm is null)
        into biggest_tpm, unlimited
        from public.google_ai_api_keys as k
        left join public.google_ai_group_limits as o
            on o.quota_group = coalesce(k.quota_group, k.key_alias) and o.model = p_model.model
        where k.is_active is true and (p_key_aliases is null or k.key_alias = any(p_key_aliases));
        if not unlimited and p_tokens > biggest_tpm then
            raise exception using errcode = 'LL003',
                message = pg_catalog.format(
                    '%s tokens can never fit: the largest TPM of %s is %s',
                    p_tokens, p_model.model, biggest_tpm
                ),
                hint = 'Split the prompt or raise the limit for a paid-tier group.';
        end if;
    end if;

    if p_wait and pg_catalog.cardinality(cands) > 0 then
        place := coalesce(p_ticket, pg_catalog.gen_random_uuid());
        in_line := google_ai_internal.wait_in_line(
            place, p_model, p_key_aliases, p_tokens, p_caller, p_request_id, p_max_wait_ms,
            p_cfg, p_started, p_policy, p_yield_after_ms
        );
        verdict := in_line.verdict;
        verdict.ticket := place;
        rounds := in_line.rounds;
        return;
    end if;

    -- NO_WAIT (or nothing to wait for): one try, the binding limit as the reason.
    verdict := google_ai_internal.reserve_round(
        p_model, cands, p_tokens, p_caller, p_request_id, p_cfg, false, p_policy, null
    );
    verdict.waited_ms := pg_catalog.round(
        extract(epoch from pg_catalog.clock_timestamp() - p_started) * 1000
    )::integer;
    rounds := 1;
end;
$$;

revoke all on function google_ai_internal.acquire_on(
    public.google_ai_model_limits, integer, boolean, integer, text [], text, text, uuid,
    public.google_ai_settings, timestamptz, google_ai_internal.caller_policy, integer
) from public, anon, authenticated;

/*
 * budget_refusal: the refusal of a caller whose daily budget for a model is
 * spent: reason caller_budget, until the next Pacific midnight.
 *
 * Parameters: p_model, the model row; p_cfg; p_started, when acquire began.
 * Returns the verdict. Raises nothing.
 * Example: verdict := google_ai_internal.budget_refusal(m, cfg, clock_timestamp());
 */
create or replace function google_ai_internal.budget_refusal(
    p_model public.google_ai_model_limits, p_cfg public.google_ai_settings, p_started timestamptz
)
returns public.acquire_result
language plpgsql
stable
set search_path = ''
as $$
declare
    verdict public.acquire_result;
    at_now timestamptz := google_ai_internal.clock();
begin
    verdict.granted := false;
    verdict.model := coalesce(p_model.api_model, p_model.model);
    verdict.reason := 'caller_budget';
    verdict.retry_after_ms := greatest(1, pg_catalog.ceil(extract(epoch from
        google_ai_internal.next_day_start(at_now, p_cfg.rpd_time_zone) - at_now
    ) * 1000))::integer;
    verdict.waited_ms := pg_catalog.round(
        extract(epoch from pg_catalog.clock_timestamp() - p_started) * 1000
    )::integer;
    return verdict;
end;
$$;

revoke all on function google_ai_internal.budget_refusal(
    public.google_ai_model_limits, public.google_ai_settings, timestamptz
) from public, anon, authenticated;

/*
 * acquire_within_budget: acquire_on under the caller's daily budget for the
 * model: refused caller_budget when it is spent, and a grant counted
 * against it (refunded and refused when a concurrent grant spent it first).
 *
 * Parameters: acquire_on's, then p_today (the Pacific day).
 * Returns the verdict and the rounds it took. Raises what acquire_on raises.
 * Example: select * from google_ai_internal.acquire_within_budget(m, 100, true, 5000,
 *              null, 'bot', 'r1', null, cfg, clock_timestamp(), pol, null, current_date);
 */
create or replace function google_ai_internal.acquire_within_budget(
    p_model public.google_ai_model_limits,
    p_tokens integer,
    p_wait boolean,
    p_max_wait_ms integer,
    p_key_aliases text [],
    p_caller text,
    p_request_id text,
    p_ticket uuid,
    p_cfg public.google_ai_settings,
    p_started timestamptz,
    p_policy google_ai_internal.caller_policy,
    p_yield_after_ms integer,
    p_today date,
    out verdict public.acquire_result,
    out rounds integer
)
language plpgsql
volatile
set search_path = ''
as $$
declare
    attempt record;
begin
    rounds := 0;
    if not google_ai_internal.spend_budget(p_caller, p_model.model, p_tokens, p_today, false) then
        verdict := google_ai_internal.budget_refusal(p_model, p_cfg, p_started);
        return;
    end if;
    attempt := google_ai_internal.acquire_on(
        p_model, p_tokens, p_wait, p_max_wait_ms, p_key_aliases, p_caller, p_request_id,
        p_ticket, p_cfg, p_started, p_policy, p_yield_after_ms
    );
    verdict := attempt.verdict;
    rounds := attempt.rounds;
    if verdict.granted and not google_ai_internal.spend_budget(
        p_caller, p_model.model, p_tokens, p_today, true
    ) then
        perform public.release(verdict.reservation_id, 'caller_budget', false);
        verdict := google_ai_internal.budget_refusal(p_model, p_cfg, p_started);
    end if;
end;
$$;

revoke all on function google_ai_internal.acquire_within_budget(
    public.google_ai_model_limits, integer, boolean, integer, text [], text, text, uuid,
    public.google_ai_settings, timestamptz, google_ai_internal.caller_policy, integer, date
) from public, anon, authenticated;

/*
 * check_acquire_args: acquire()'s arguments, checked before any state is
 * touched.
 *
 * Parameters: acquire's model, tokens, mode, max_wait_ms, key_aliases,
 * caller and request_id.
 * Returns the model's limits row. Raises: LL001 unknown model, LL002 bad
 * tokens, LL004 unknown mode, LL007 bad max_wait_ms, too many key_aliases
 * or text too long.
 * Example: m := google_ai_internal.check_acquire_args('gemma-3-27b', 100, 'WAIT', 5000,
 *                                                     null, 'bot', 'r1');
 */
create or replace function google_ai_internal.check_acquire_args(
    p_model text,
    p_tokens integer,
    p_mode text,
    p_max_wait_ms integer,
    p_key_aliases text [],
    p_caller text,
    p_request_id text
)
returns public.google_ai_model_limits
language plpgsql
stable
set search_path = ''
as $$
declare
    wanted public.google_ai_model_limits;
begin
    if p_model is null then
        raise exception using errcode = 'LL001', message = 'model must not be null',
            hint = 'Pass a model name such as gemma-3-27b.';
    end if;
    -- One cheap test on the hot path; check_text names the culprit.
    if greatest(
        pg_catalog.length(p_model), pg_catalog.length(p_caller), pg_catalog.length(p_request_id)
    ) > 200 then
        perform google_ai_internal.check_text('model', p_model, 200);
        perform google_ai_internal.check_text('caller', p_caller, 200);
        perform google_ai_internal.check_text('request_id', p_request_id, 200);
    end if;
    wanted := google_ai_internal.resolve_model(p_model);
    if p_tokens is null or p_tokens < 0 then
        raise exception using errcode = 'LL002',
            message = pg_catalog.format('tokens must be a non-negative integer, got %s',
                                        coalesce(p_tokens::text, 'null')),
            hint = 'Pass an upper-bound estimate of the input tokens.';
    end if;
    if p_mode is null or pg_catalog.upper(p_mode) not in ('WAIT', 'NO_WAIT') then
        raise exception using errcode = 'LL004',
            message = pg_catalog.format('unknown mode %L',
                                        pg_catalog.left(coalesce(p_mode, 'null'), 50)),
            hint = 'mode is WAIT or NO_WAIT.';
    end if;
    if p_max_wait_ms is null or p_max_wait_ms < 0 or p_max_wait_ms > 86400000 then
        raise exception using errcode = 'LL007',
            message = pg_catalog.format('max_wait_ms must be between 0 and 86400000, got %s',
                                        coalesce(p_max_wait_ms::text, 'null')),
            hint = 'Pass the whole wait in milliseconds (0 with NO_WAIT).';
    end if;
    if p_key_aliases is not null and pg_catalog.cardinality(p_key_aliases) > 1000 then
        raise exception using errcode = 'LL007', message = 'key_aliases has more than 1000 entries',
            hint = 'Pass only the aliases this process holds.';
    end if;
    return wanted;
end;
$$;

revoke all on function google_ai_internal.check_acquire_args(
    text, integer, text, integer, text [], text, text
) from public, anon, authenticated;

/*
 * fall_back_now: fallback in time: the model asked for has not granted
 * within the class's fallback_after_ms; one try (NO_WAIT, under the
 * caller's budget) on each later model of the chain, in order, until one
 * grants.
 *
 * Parameters: the chain, the step waited on, acquire's tokens and
 * key_aliases, the policy, request_id, settings, start and Pacific day.
 * Returns the last verdict (a grant, or the last refusal), the model it is
 * for, and the rounds taken. Raises what acquire_on raises.
 * Example: select * from google_ai_internal.fall_back_now(array['gemma-3-27b', 'gemma-3-12b'],
 *              1, 100, null, pol, 'r1', cfg, clock_timestamp(), current_date);
 */
create or replace function google_ai_internal.fall_back_now(
    p_chain text [],
    p_step integer,
    p_tokens integer,
    p_key_aliases text [],
    p_policy google_ai_internal.caller_policy,
    p_request_id text,
    p_cfg public.google_ai_settings,
    p_started timestamptz,
    p_today date,
    out verdict public.acquire_result,
    out served public.google_ai_model_limits,
    out rounds integer
)
language plpgsql
volatile
set search_path = ''
as $$
declare
    attempt record;
begin
    rounds := 0;
    for later in p_step + 1 .. pg_catalog.cardinality(p_chain) loop
        served := google_ai_internal.resolve_model(p_chain[later]);
        attempt := google_ai_internal.acquire_within_budget(
            served, p_tokens, false, 0, p_key_aliases, p_policy.caller, p_request_id, null, p_cfg,
            p_started, p_policy, null, p_today
        );
        verdict := attempt.verdict;
        rounds := rounds + attempt.rounds;
        exit when verdict.granted;
    end loop;
end;
$$;

revoke all on function google_ai_internal.fall_back_now(
    text [], integer, integer, text [], google_ai_internal.caller_policy, text,
    public.google_ai_settings, timestamptz, date
) from public, anon, authenticated;

/*
 * mark_fallback: a grant served by another model than the one asked for:
 * its ledger row records the model asked for (details.granted.fallback_from,
 * which the audit log and usage_report read) and the whole wait, which
 * began on that model.
 *
 * Parameters: p_verdict, the grant; p_wanted, the model asked for.
 * Returns nothing. Raises nothing.
 * Example: perform google_ai_internal.mark_fallback(verdict, 'gemma-3-27b');
 */
create or replace function google_ai_internal.mark_fallback(
    p_verdict public.acquire_result, p_wanted text
)
returns void
language sql
volatile
set search_path = ''
as $$
    update public.google_ai_reservations as r
    set
        details = coalesce(r.details, '{}'::jsonb) || pg_catalog.jsonb_build_object(
            'granted', pg_catalog.jsonb_build_object('fallback_from', p_wanted)
        ),
        waited_ms = greatest(r.waited_ms, p_verdict.waited_ms)
    where r.id = p_verdict.reservation_id
$$;

revoke all on function google_ai_internal.mark_fallback(public.acquire_result, text)
from public, anon, authenticated;

/*
 * acquire: atomically reserve one request and `tokens` input tokens of
 * `model` on the best usable key.
 *
 * Parameters:
 *   model        limits row name or API id ('gemma-3-27b' or 'gemma-3-27b-it')
 *   tokens       estimated input tokens (an upper bound; settle reconciles)
 *   mode         'NO_WAIT' (one attempt) or 'WAIT' (wait for capacity, see below)
 *   max_wait_ms  how long a WAIT may last in all, 0..86400000; the ticket's
 *                first call fixes the deadline, later calls can only bring
 *                it closer (0 ends the wait)
 *   key_aliases  the keys this caller holds; null means every active key
 *   caller       who calls (<= 200 characters): its class and budgets apply
 *                (google_ai_caller_policies; no row: class default). A login
 *                pinned to a caller (login_role) is that caller, whatever it
 *                passes here.
 *   request_id   free text for the audit log (<= 200 characters)
 *   ticket       the place in line a previous answer returned (null at first)
 *
 * Returns one acquire_result row. A refusal is a row with granted = false and
 * reason in (rpm, tpm, rpd, cooldown, no_key, wait_timeout, caller_budget,
 * queued), never an exception, so its audit row is kept. `model` is the API
 * id of the model served, which a fallback may have changed.
 *
 * The one waiting rule: while reason = 'queued', sleep retry_after_ms (0 =
 * call at once) without holding a connection, then call again with the same
 * arguments and the returned ticket. A WAIT always holds a ticket (made here
 * when none is passed); its first call takes a place in the queue of its
 * model and key set and fixes the deadline. The queue serves by class
 * priority (aged over google_ai_settings.aging_ms, so no class starves), then
 * ticket order. No call stays in the database longer than wait_slice_ms, so
 * a transaction pooler keeps its connections for other work. The answer is a
 * grant, a final refusal (wait_timeout at the deadline, rpd or cooldown that
 * outlast it, no_key, caller_budget), or 'queued'. The place expires if the
 * caller is more than wait_ticket_grace_ms late. Only the final verdict is
 * audited, with the whole wait in waited_ms. NO_WAIT, and WAIT with
 * max_wait_ms = 0, try once and refuse with the binding limit and a truthful
 * retry_after_ms.
 *
 * A 'queued' answer says where the waiter stands: queue_position (1 =
 * next) and expected_wait_ms (when its turn is expected), for a person
 * waiting on the other side.
 *
 * Policy (caller_policy): the class's reserves and priority apply in every
 * try, and a class with members above it is paced (try_reserve). A
 * caller with a daily budget for the model (google_ai_caller_budgets) is
 * refused caller_budget, until the next Pacific midnight, once it is spent. A caller whose class may fall back is not refused for a model while
 * a model of its fallback chain (google_ai_fallbacks) can grant within the
 * same wait: a final refusal moves the wait to the next model (the ticket
 * follows), and the grant's ledger row records fallback_from. With the
 * class's fallback_after_ms, a wait that has lasted that long is served at
 * once by a later model of the chain that can grant now (its place in line
 * is given up); until then no call sleeps past that moment.
 *
 * Raises: LL001 unknown model, LL002 bad tokens, LL003 tokens > TPM,
 *         LL004 unknown mode, LL007 bad max_wait_ms or text too long.
 * Example: select * from public.acquire('gemma-3-27b', 1200, 'WAIT', 30000,
 *                                       array['bot-key-1'], 'bot', 'msg-42');
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
    served public.google_ai_model_limits;
    policy google_ai_internal.caller_policy;
    chain text [];
    step integer := 1;
    waiting boolean;
    wait_left integer;
    yield_after integer;
    held_model text;
    held_since timestamptz;
    attempt record;
    verdict public.acquire_result;
    first_refusal public.acquire_result;
    rounds integer := 0;
    today date;
begin
    wanted := google_ai_internal.check_acquire_args(
        acquire.model, tokens, mode, max_wait_ms, key_aliases, caller, request_id
    );
    policy := google_ai_internal.caller_policy(caller);
    chain := case
        when policy.may_fall_back then google_ai_internal.fallback_chain(wanted.model)
        else array[wanted.model]
    end;
    -- A ticket that already waits on a later model of the chain stays there.
    if ticket is not null and pg_catalog.cardinality(chain) > 1 then
        select t.model, t.created_at into held_model, held_since
        from google_ai_internal.wait_tickets as t where t.id = ticket;
        step := coalesce(pg_catalog.array_position(chain, held_model), 1);
    end if;
    -- A ticket holder's call with max_wait_ms = 0 ends its wait in line.
    waiting := pg_catalog.upper(mode) = 'WAIT' and (max_wait_ms > 0 or ticket is not null);
    today := (google_ai_internal.clock() at time zone cfg.rpd_time_zone)::date;

    while step <= pg_catalog.cardinality(chain) loop
        served := case
            when step = 1 then wanted else google_ai_internal.resolve_model(chain[step])
        end;
        wait_left := case
            when step = 1 then max_wait_ms
            else greatest(0, max_wait_ms - pg_catalog.round(
                extract(epoch from pg_catalog.clock_timestamp() - started) * 1000
            )::integer)
        end;
        yield_after := case when step < pg_catalog.cardinality(chain) then policy.fallback_after_ms end;
        if held_since <= google_ai_internal.clock()
            - pg_catalog.make_interval(secs => yield_after / 1000.0) then
            attempt := google_ai_internal.fall_back_now(
                chain, step, tokens, key_aliases, policy, request_id, cfg, started, today
            );
            rounds := rounds + attempt.rounds;
            if (attempt.verdict).granted then
                delete from google_ai_internal.wait_tickets as t where t.id = ticket;
                verdict := attempt.verdict;
                verdict.waited_ms := pg_catalog.round(extract(epoch from
                    google_ai_internal.clock() - held_since
                ) * 1000)::integer;
                served := attempt.served;
                exit;
            end if;
        end if;
        attempt := google_ai_internal.acquire_within_budget(
            served, tokens, waiting and (wait_left > 0 or ticket is not null), wait_left,
            key_aliases, policy.caller, request_id, ticket, cfg, started, policy, yield_after, today
        );
        verdict := attempt.verdict;
        rounds := rounds + attempt.rounds;
        if verdict.reason = 'queued' then
            return verdict;  -- the wait goes on; its last call audits all of it
        end if;
        exit when verdict.granted;
        if first_refusal.reason is null then
            first_refusal := verdict;
        end if;
        step := step + 1;
    end loop;

    if verdict.granted and served.model <> wanted.model then
        perform google_ai_internal.mark_fallback(verdict, wanted.model);
    elsif not verdict.granted then
        -- Every model refused: the model asked for says why.
        verdict := first_refusal;
        served := wanted;
    end if;
    perform google_ai_internal.record_acquire_verdict(
        verdict, served.model, tokens, pg_catalog.upper(mode), max_wait_ms, rounds, policy.caller,
        request_id, key_aliases
    );
    return verdict;
end;
$$;

comment on function public.acquire(text, integer, text, integer, text [], text, text, uuid) is
'Reserve one request and `tokens` input tokens of a model on the best key (RPM/TPM over an exact sliding window, RPD per Pacific day), under the caller''s class (priority, reserves), daily budget and fallback chain. Returns a grant (model = the model served) or a refusal row; raises only on bad input. WAIT always holds a ticket (returned; made here when none is passed): while reason = ''queued'', sleep retry_after_ms and call again with it (queue_position and expected_wait_ms say where it stands). A class''s fallback_after_ms moves a long wait to a fallback that can grant now. No call lasts longer than google_ai_settings.wait_slice_ms.';

revoke all on function public.acquire(text, integer, text, integer, text [], text, text, uuid)
from public, anon, authenticated;
grant execute on function public.acquire(text, integer, text, integer, text [], text, text, uuid)
to service_role;
