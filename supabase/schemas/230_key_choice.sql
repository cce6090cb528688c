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
 * try_reserve: one try on one candidate: lock its window, decide, and on
 * success write the reservation (with the time acquire has run so far) and
 * the new totals. On refusal nothing is written. retry_after_ms is the
 * truthful earliest moment every binding dimension has freed, computed from
 * the ledger (a release can only make it sooner).
 *
 * The caller's policy applies on top of the limits: its class and the ones
 * below it may not take the reserves of the higher-priority classes. RPM
 * and TPM reserves count only while their class is active here (a grant in
 * this window, or a live waiter for the model); the RPD reserve always. The
 * window's rows of the reserving classes are counted from the ledger (the
 * window's rows only, and only when such a reserve exists).
 *
 * Pacing: while a higher-priority class is active here (it was granted
 * within the hold, or waits for the model), a lower class gets at most one
 * grant per hold / rpm (paced_until). A saturated window otherwise frees
 * its slots in the bursts it filled them in, and the higher class would wait
 * for the next burst; paced, a slot frees every hold / rpm.
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
    p_policy google_ai_internal.caller_policy,
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
    reserved_rpm numeric := 0;
    reserved_tpm numeric := 0;
    higher_requests bigint := 0;
    higher_tokens bigint := 0;
    share integer;
    held_per_window numeric := (p_cfg.window_ms + p_cfg.window_guard_ms)::numeric / p_cfg.window_ms;
    lead_active boolean := false;
begin
    granted := false;
    locked := google_ai_internal.lock_window(p_cand.quota_group, p_model.model, p_cfg);
    st := locked.st;
    at_now := locked.at_now;
    hold := locked.hold;

    if st.cooldown_until > at_now then
        reason := 'cooldown';
        free_at := google_ai_internal.cooldown_free_at(st, at_now, p_cfg);
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

    if p_cand.rpd is not null and p_policy.rpd_share < 1
        and st.day_requests + 1 > pg_catalog.floor(p_cand.rpd * p_policy.rpd_share) then
        -- The day's reserve of the classes above is never lent.
        candidate := google_ai_internal.next_day_start(at_now, p_cfg.rpd_time_zone);
        if free_at is null or candidate > free_at then
            reason := 'rpd';
            free_at := candidate;
        end if;
    end if;

    if pg_catalog.cardinality(p_policy.higher_classes) > 0
        and (p_cand.rpm is not null or p_cand.tpm is not null) then
        select
            coalesce(sum(h.rpm) filter (where h.active), 0),
            coalesce(sum(h.tpm) filter (where h.active), 0),
            coalesce(sum(h.requests), 0),
            coalesce(sum(h.tokens), 0)
        into reserved_rpm, reserved_tpm, higher_requests, higher_tokens
        from (
            select
                c.rpm, c.tpm, coalesce(w.requests, 0) as requests, coalesce(w.tokens, 0) as tokens,
                w.class is not null or exists (
                    select from google_ai_internal.wait_tickets as t
                    where
                        t.model = p_model.model and t.caller_class = c.class
                        and t.alive_until > at_now
                ) as active
            from rows from (
                pg_catalog.unnest(p_policy.higher_classes),
                pg_catalog.unnest(p_policy.higher_rpm),
                pg_catalog.unnest(p_policy.higher_tpm)
            ) as c (class, rpm, tpm)
            left join (
                select
                    r.caller_class as class,
                    sum(r.counted_requests) as requests,
                    sum(r.counted_tokens) as tokens
                from public.google_ai_reservations as r
                where
                    r.quota_group = p_cand.quota_group and r.model = p_model.model
                    and r.granted_at > st.swept_to
                    and r.caller_class = any(p_policy.higher_classes)
                group by r.caller_class
            ) as w on w.class = c.class
        ) as h;

        -- A reserve is a share of the rate; its grants hold their slots for the
        -- window plus the guard, so the slots it keeps are scaled up by that.
        share := pg_catalog.floor(p_cand.rpm * (1 - least(
            reserved_rpm * held_per_window, 1
        )));
        if p_cand.rpm is not null and reserved_rpm > 0
            and st.window_requests - higher_requests + 1 > share then
            -- A slot of this share frees when the k-th oldest of its grants leaves.
            select r.granted_at + hold into candidate
            from public.google_ai_reservations as r
            where
                r.quota_group = p_cand.quota_group and r.model = p_model.model
                and r.granted_at > st.swept_to and r.counted_requests > 0
                and coalesce(r.caller_class <> all(p_policy.higher_classes), true)
            order by r.granted_at
            offset greatest(st.window_requests - higher_requests - share, 0) limit 1;
            candidate := coalesce(candidate, at_now + hold);
            if free_at is null or candidate > free_at then
                reason := 'rpm';
                free_at := candidate;
            end if;
        end if;

        share := pg_catalog.floor(p_cand.tpm * (1 - least(
            reserved_tpm * held_per_window, 1
        )));
        if p_cand.tpm is not null and reserved_tpm > 0
            and st.window_tokens - higher_tokens + p_tokens > share then
            select w.granted_at + hold into candidate
            from (
                select
                    r.granted_at,
                    sum(r.counted_tokens) over (order by r.granted_at, r.id) as freed
                from public.google_ai_reservations as r
                where
                    r.quota_group = p_cand.quota_group and r.model = p_model.model
                    and r.granted_at > st.swept_to and r.counted_tokens > 0
                    and coalesce(r.caller_class <> all(p_policy.higher_classes), true)
            ) as w
            where w.freed >= st.window_tokens - higher_tokens + p_tokens - share
            order by w.granted_at
            limit 1;
            candidate := coalesce(candidate, at_now + hold);
            if free_at is null or candidate > free_at then
                reason := 'tpm';
                free_at := candidate;
            end if;
        end if;
    end if;

    if p_policy.paced and p_cand.rpm is not null and st.paced_until > at_now then
        lead_active := (st.lead_at > at_now - hold and st.lead_priority < p_policy.priority)
            or exists (
                select from google_ai_internal.wait_tickets as t
                where
                    t.model = p_model.model and t.priority < p_policy.priority
                    and t.alive_until > at_now
            );
        if lead_active and (free_at is null or st.paced_until > free_at) then
            reason := 'rpm';
            free_at := st.paced_until;
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
        granted_at, rpd_day, lease_until, caller, request_id, waited_ms, caller_class
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
        ))::integer,
        p_policy.caller_class
    )
    returning id into reservation_id;

    st.window_requests := st.window_requests + 1;
    st.window_tokens := st.window_tokens + p_tokens;
    st.day_requests := st.day_requests + 1;
    if p_cand.rpm > 0 then
        st.paced_until := greatest(st.paced_until, at_now) + hold / p_cand.rpm;
    end if;
    if st.lead_at is null or st.lead_at <= at_now - hold
        or p_policy.priority <= st.lead_priority then
        st.lead_priority := p_policy.priority;
        st.lead_at := at_now;
    end if;
    st := google_ai_internal.outage_probe(st, at_now, p_cfg);
    perform google_ai_internal.store_window(st);
    granted := true;
end;
$$;

revoke all on function google_ai_internal.try_reserve(
    google_ai_internal.candidate, public.google_ai_model_limits, integer, text, text,
    public.google_ai_settings, google_ai_internal.caller_policy
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
 * request_id, the settings, p_release_on_refusal, the caller's policy.
 * Returns the verdict: a grant, or the refusal that frees soonest (reason
 * no_key when there was no candidate). Raises nothing of its own (LL999 is
 * caught inside).
 * Example: verdict := google_ai_internal.reserve_round(
 *              wanted, cands, 1200, 'bot', 'msg-42', cfg, false, policy);
 */
create or replace function google_ai_internal.reserve_round(
    p_model public.google_ai_model_limits,
    p_cands google_ai_internal.candidate [],
    p_tokens integer,
    p_caller text,
    p_request_id text,
    p_cfg public.google_ai_settings,
    p_release_on_refusal boolean,
    p_policy google_ai_internal.caller_policy
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
                    cand, p_model, p_tokens, p_caller, p_request_id, p_cfg, p_policy
                );
                if not attempt.granted then
                    raise exception using errcode = 'LL999';
                end if;
            exception when sqlstate 'LL999' then
                null;  -- rolled back: the window row is unlocked again
            end;
        else
            attempt := google_ai_internal.try_reserve(
                cand, p_model, p_tokens, p_caller, p_request_id, p_cfg, p_policy
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
    public.google_ai_settings, boolean, google_ai_internal.caller_policy
) from public, anon, authenticated;
