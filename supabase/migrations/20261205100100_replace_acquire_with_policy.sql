-- Caller classes in acquire(): the queue serves by class priority (aged, so
-- no class starves), a class's reserves are kept from the classes below it,
-- a caller's daily budget is enforced, and a caller whose class may fall
-- back is served by the next model of its fallback chain instead of being
-- refused. Written from supabase/schemas (175, 220, 230, 235, 240, 300, 335).
--
-- Lock order: unchanged (220_window_protocol.sql); a budgeted caller's usage
-- row is written after its grant's window row, in the same transaction, and
-- only by grants of that caller.

create type google_ai_internal.caller_policy as (
    caller text,
    caller_class text,
    priority integer,
    may_fall_back boolean,
    -- Higher-priority classes with an RPM or TPM reserve, and those reserves.
    higher_classes text [],
    higher_rpm numeric [],
    higher_tpm numeric [],
    -- The share of RPD this caller's class and those below it may use:
    -- 1 minus the RPD reserves of every higher-priority class.
    rpd_share numeric,
    -- Whether some class ranks above this one (its grants may be paced).
    paced boolean
);

-- New signatures (a caller_policy argument): the old ones go.
drop function google_ai_internal.try_reserve(
    google_ai_internal.candidate, public.google_ai_model_limits, integer, text, text,
    public.google_ai_settings
);
drop function google_ai_internal.reserve_round(
    public.google_ai_model_limits, google_ai_internal.candidate [], integer, text, text,
    public.google_ai_settings, boolean
);
drop function google_ai_internal.wait_in_line(
    uuid, public.google_ai_model_limits, text [], integer, text, text, integer,
    public.google_ai_settings, timestamptz
);

/*
 * caller_policy: the policy acquire() applies to a caller. A session whose
 * login is some policy row's login_role acts as that row's caller, whatever
 * name it passed; a name no row holds is in class `default` (priority 50, no
 * fallback, should that row be gone).
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
    select c.name, c.priority, c.may_fall_back
    into pol.caller_class, pol.priority, pol.may_fall_back
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
        count(*) > 0
    into pol.higher_classes, pol.higher_rpm, pol.higher_tpm, pol.rpd_share, pol.paced
    from public.google_ai_caller_classes as c
    where c.priority < pol.priority;
    return pol;
end;
$$;

revoke all on function google_ai_internal.caller_policy(text) from public, anon, authenticated;

/*
 * fallback_chain: the models acquire() may serve for p_model, in order: the
 * model itself, then its fallback, that one's, and so on (at most four
 * steps, each model once).
 *
 * Parameters: p_model, a google_ai_model_limits.model name.
 * Returns the chain as an array, p_model first. Raises nothing.
 * Example: select google_ai_internal.fallback_chain('gemma-3-27b');
 */
create or replace function google_ai_internal.fallback_chain(p_model text)
returns text []
language sql
stable
set search_path = ''
as $$
    with recursive chain (model, depth, seen) as (
        select p_model, 0, array[p_model]
        union all
        select f.fallback_model, c.depth + 1, c.seen || f.fallback_model
        from chain as c
        inner join public.google_ai_fallbacks as f on f.model = c.model
        where c.depth < 4 and f.fallback_model <> all(c.seen)
    )
    select pg_catalog.array_agg(c.model order by c.depth) from chain as c
$$;

revoke all on function google_ai_internal.fallback_chain(text) from public, anon, authenticated;

/*
 * spend_budget: count one grant of `p_tokens` estimated input tokens against
 * the caller's daily budget for the model, if it has one, in one statement
 * that also checks it (so concurrent grants cannot overshoot). With p_spend
 * false it only checks whether such a grant would fit.
 *
 * Parameters: p_caller, p_model (limits row name), p_tokens, p_day (the
 * Pacific day of the grant), p_spend.
 * Returns true when the grant fits the budget (or there is none), false when
 * it does not (nothing is counted then). Raises nothing.
 * Example: select google_ai_internal.spend_budget('notebook-7', 'gemma-3-27b', 900, current_date, true);
 */
create or replace function google_ai_internal.spend_budget(
    p_caller text, p_model text, p_tokens integer, p_day date, p_spend boolean
)
returns boolean
language plpgsql
volatile
set search_path = ''
as $$
declare
    budget public.google_ai_caller_budgets;
    spent public.google_ai_caller_usage;
begin
    select b.* into budget
    from public.google_ai_caller_budgets as b
    where b.caller = p_caller and b.model = p_model;
    if budget.caller is null then
        return true;
    end if;
    if not p_spend then
        select u.* into spent
        from public.google_ai_caller_usage as u
        where u.caller = p_caller and u.model = p_model and u.day = p_day;
        return (budget.requests is null or coalesce(spent.requests, 0) + 1 <= budget.requests)
            and (budget.input_tokens is null
                 or coalesce(spent.input_tokens, 0) + p_tokens <= budget.input_tokens);
    end if;
    insert into public.google_ai_caller_usage as u (caller, model, day, requests, input_tokens)
    select p_caller, p_model, p_day, 1, p_tokens
    where
        (budget.requests is null or budget.requests >= 1)
        and (budget.input_tokens is null or budget.input_tokens >= p_tokens)
    on conflict (caller, model, day) do update
    set requests = u.requests + 1, input_tokens = u.input_tokens + excluded.input_tokens
    where
        (budget.requests is null or u.requests + 1 <= budget.requests)
        and (budget.input_tokens is null or u.input_tokens + excluded.input_tokens <= budget.input_tokens)
    returning u.caller into spent.caller;
    return spent.caller is not null;
end;
$$;

revoke all on function google_ai_internal.spend_budget(text, text, integer, date, boolean)
from public, anon, authenticated;

/*
 * store_window: write a window row that the caller locked with lock_window
 * and changed in its copy (totals, sweep horizon, quota day, cooldown) back
 * to the table.
 *
 * Parameters: p_st, the changed copy. Returns nothing. Raises nothing.
 * Example: see try_reserve and report_rate_limit.
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
        lead_at = p_st.lead_at
    where s.quota_group = p_st.quota_group and s.model = p_st.model;
end;
$$;

comment on function google_ai_internal.store_window(public.google_ai_quota_state) is
'Write back a window row locked by lock_window (step 3 of the lock order, same transaction).';
revoke all on function google_ai_internal.store_window(public.google_ai_quota_state)
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

/*
 * queue_rank: where a waiter stands in its queue: its class priority, lowered
 * linearly to 0 (the top) over google_ai_settings.aging_ms of waiting, so no
 * class starves. Ties go by ticket order (seq): after aging_ms a waiter is
 * ahead of everyone who joined after it, whatever their class.
 *
 * Parameters: p_priority, the ticket's class priority; p_created_at, when it
 * joined; p_now; p_aging_ms.
 * Returns the rank (lower is served first). Raises nothing.
 * Example: select google_ai_internal.queue_rank(90, now() - interval '30 s', now(), 60000);
 */
create or replace function google_ai_internal.queue_rank(
    p_priority integer, p_created_at timestamptz, p_now timestamptz, p_aging_ms integer
)
returns double precision
language sql
immutable
set search_path = ''
as $$
    select p_priority * greatest(
        0, 1 - extract(epoch from p_now - p_created_at) * 1000 / p_aging_ms
    )::double precision
$$;

revoke all on function google_ai_internal.queue_rank(integer, timestamptz, timestamptz, integer)
from public, anon, authenticated;

/*
 * wait_in_line: one call of a WAIT that holds a ticket (a place in the
 * queue of its model and key set, kept between calls). The queue is served
 * by rank (queue_rank: class priority, aged), then ticket order; "ahead"
 * below means ahead in that order.
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
 *   - at the deadline the head tries once more; anyone not granted then is
 *     refused 'wait_timeout' with a truthful retry_after_ms.
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
 * started, and the caller's policy (its class and priority).
 * Returns the verdict (waited_ms counted from the ticket's first call) and
 * the number of looks at the queue over the whole wait. Raises nothing.
 * Example: select * from google_ai_internal.wait_in_line(
 *              gen_random_uuid(), m, null, 100, 'bot', 'r1', 5000, cfg, clock_timestamp(),
 *              google_ai_internal.caller_policy('bot'));
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
    out verdict public.acquire_result,
    out rounds integer
)
language plpgsql
volatile
set search_path = ''
set plan_cache_mode = force_generic_plan
as $$
declare
    queue_keys text := google_ai_internal.queue_key_set(p_key_aliases);
    deadline timestamptz;
    slice_end timestamptz;
    lead_ms integer := p_cfg.wait_recheck_ms;
    grace interval := pg_catalog.make_interval(secs => p_cfg.wait_ticket_grace_ms / 1000.0);
    me google_ai_internal.wait_tickets;
    pred google_ai_internal.wait_tickets;
    fresh boolean := false;
    present boolean;
    cands google_ai_internal.candidate [];
    ahead integer;
    ahead_tokens bigint;
    turn timestamptz;
    at_now timestamptz;
    remaining_ms double precision;
    hint_ms double precision;
begin
    -- Places whose owner stopped calling back stop counting, whoever sweeps them.
    delete from google_ai_internal.wait_tickets as t
    where t.id in (
        select x.id from google_ai_internal.wait_tickets as x
        where x.alive_until < google_ai_internal.clock()
        for update skip locked
    );

    select t.* into me from google_ai_internal.wait_tickets as t where t.id = p_ticket for update;
    if me.id is not null and (me.model <> p_model.model or me.key_set <> queue_keys) then
        -- The same ticket for another queue: a new place at that queue's tail.
        delete from google_ai_internal.wait_tickets as t where t.id = p_ticket;
        me := null;
    end if;
    if me.id is null then
        at_now := google_ai_internal.clock();
        insert into google_ai_internal.wait_tickets as t (
            id, model, key_set, tokens, caller, request_id, created_at, due_at, turn_at,
            alive_until, deadline, priority, caller_class
        ) values (
            p_ticket, p_model.model, queue_keys, p_tokens, p_caller, p_request_id, at_now,
            at_now, at_now, at_now + pg_catalog.make_interval(
                secs => (p_cfg.wait_slice_ms + p_cfg.wait_ticket_grace_ms) / 1000.0
            ),
            -- Real time, like every deadline here; from the insert, so waited_ms
            -- (counted from created_at) reaches max_wait_ms at the deadline.
            pg_catalog.clock_timestamp()
                + pg_catalog.make_interval(secs => p_max_wait_ms / 1000.0),
            p_policy.priority, p_policy.caller_class
        )
        -- A retry after a lost connection may race the call it replaces.
        on conflict (id) do nothing
        returning t.* into me;
        if me.id is null then
            select t.* into me
            from google_ai_internal.wait_tickets as t where t.id = p_ticket for update;
        else
            fresh := true;
        end if;
    end if;
    -- The wait ends at the ticket's deadline, fixed by its first call, or
    -- sooner when this call's max_wait_ms says so (a caller that counts down
    -- its own wait, or gives up with 0).
    deadline := least(
        me.deadline, p_started + pg_catalog.make_interval(secs => p_max_wait_ms / 1000.0)
    );
    slice_end := least(
        deadline, p_started + pg_catalog.make_interval(secs => p_cfg.wait_slice_ms / 1000.0)
    );
    rounds := me.rounds;
    verdict.granted := false;
    verdict.model := coalesce(p_model.api_model, p_model.model);

    loop
        rounds := rounds + 1;
        at_now := google_ai_internal.clock();
        pred := null;
        select t.* into pred
        from google_ai_internal.wait_tickets as t
        where
            t.model = me.model and t.key_set = me.key_set and t.id <> me.id
            and (google_ai_internal.queue_rank(t.priority, t.created_at, at_now, p_cfg.aging_ms), t.seq)
            < (google_ai_internal.queue_rank(me.priority, me.created_at, at_now, p_cfg.aging_ms), me.seq)
            and t.alive_until > at_now
            and (t.due_at + grace > at_now or google_ai_internal.ticket_in_call(t.id))
        order by
            google_ai_internal.queue_rank(t.priority, t.created_at, at_now, p_cfg.aging_ms) desc,
            t.seq desc
        limit 1;
        cands := array(
            select c
            from google_ai_internal.candidates(p_model.model, p_key_aliases, at_now, p_tokens) as c
        );
        remaining_ms := extract(epoch from deadline - pg_catalog.clock_timestamp()) * 1000;

        if pred.id is null then
            verdict := google_ai_internal.reserve_round(
                p_model, cands, p_tokens, p_caller, p_request_id, p_cfg, true, p_policy
            );
            exit when verdict.granted or verdict.reason = 'no_key';
            if remaining_ms <= 0 then
                verdict.reason := 'wait_timeout';
                exit;
            end if;
            -- Nothing but time frees a cooldown or a day.
            exit when
                verdict.reason in ('rpd', 'cooldown') and verdict.retry_after_ms > remaining_ms;
            turn := at_now + pg_catalog.make_interval(secs => verdict.retry_after_ms / 1000.0);
            if verdict.reason in ('rpd', 'cooldown') then
                hint_ms := verdict.retry_after_ms - lead_ms;
                verdict.reason := 'queued';
                exit;
            end if;
            if fresh or pg_catalog.clock_timestamp() >= slice_end then
                hint_ms := 0;
                verdict.reason := 'queued';
                exit;
            end if;
            perform pg_catalog.pg_sleep(least(
                verdict.retry_after_ms,
                p_cfg.wait_recheck_ms,
                remaining_ms,
                extract(epoch from slice_end - pg_catalog.clock_timestamp()) * 1000
            ) / 1000.0);
            continue;
        end if;

        -- Behind others: when could this waiter's turn come?
        select count(*)::integer, coalesce(sum(t.tokens), 0)
        into ahead, ahead_tokens
        from google_ai_internal.wait_tickets as t
        where
            t.model = me.model and t.key_set = me.key_set and t.id <> me.id
            and (google_ai_internal.queue_rank(t.priority, t.created_at, at_now, p_cfg.aging_ms), t.seq)
            < (google_ai_internal.queue_rank(me.priority, me.created_at, at_now, p_cfg.aging_ms), me.seq)
            and t.alive_until > at_now
            and (t.due_at + grace > at_now or google_ai_internal.ticket_in_call(t.id));
        turn := greatest(
            google_ai_internal.turn_estimate(p_model, cands, ahead, ahead_tokens, p_tokens, p_cfg),
            pred.turn_at
        );
        verdict.key_alias := null;
        verdict.reservation_id := null;
        verdict.retry_after_ms := greatest(
            1, pg_catalog.ceil(extract(epoch from turn - at_now) * 1000)
        )::integer;
        if remaining_ms <= 0 then
            verdict.reason := 'wait_timeout';
            exit;
        end if;
        hint_ms := extract(epoch from turn - at_now) * 1000 - lead_ms;
        present := google_ai_internal.ticket_in_call(pred.id);
        if hint_ms > 0 or fresh or not present or pg_catalog.clock_timestamp() >= slice_end then
            if hint_ms <= 0 and not present then
                -- Due, but the one ahead is not here: until it is due, wait for
                -- that; once it is late, back off by how late it is. Either way
                -- without a connection.
                hint_ms := greatest(
                    p_cfg.wait_recheck_ms,
                    pg_catalog.abs(extract(epoch from at_now - pred.due_at)) * 1000
                );
            end if;
            -- Look again by the time the one ahead would be found gone.
            hint_ms := greatest(p_cfg.wait_recheck_ms, least(
                hint_ms,
                case
                    when present then p_cfg.wait_slice_ms + p_cfg.wait_ticket_grace_ms
                    else extract(epoch from pred.due_at + grace - at_now) * 1000
                end
            ));
            verdict.reason := 'queued';
            exit;
        end if;
        -- Due, and the one ahead is in a call: wait for it to end (granted, or
        -- its slice over), then look again.
        begin
            perform pg_catalog.set_config('lock_timeout', greatest(1, pg_catalog.ceil(
                extract(epoch from slice_end - pg_catalog.clock_timestamp()) * 1000
            ))::text || 'ms', true);
            perform 1 from google_ai_internal.wait_tickets as t where t.id = pred.id for update;
            raise exception using errcode = 'LL999';
        exception
            when sqlstate 'LL999' or lock_not_available then null;  -- lock and setting undone
        end;
    end loop;

    if verdict.reason = 'queued' then
        hint_ms := greatest(0, least(hint_ms, remaining_ms));
        at_now := google_ai_internal.clock();
        verdict.key_alias := null;
        verdict.reservation_id := null;
        verdict.retry_after_ms := pg_catalog.ceil(hint_ms)::integer;
        update google_ai_internal.wait_tickets as t
        set
            due_at = at_now + pg_catalog.make_interval(secs => hint_ms / 1000.0),
            turn_at = coalesce(turn, at_now),
            alive_until = at_now + pg_catalog.make_interval(
                secs => (hint_ms + p_cfg.wait_slice_ms + p_cfg.wait_ticket_grace_ms) / 1000.0
            ),
            rounds = wait_in_line.rounds
        where t.id = me.id;
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
    public.google_ai_settings, timestamptz, google_ai_internal.caller_policy
) from public, anon, authenticated;

/*
 * acquire_on: acquire()'s work on one model of its fallback chain: the
 * candidates (LL003 when the request can never fit), then a WAIT in line
 * (wait_in_line) or one NO_WAIT try. Records nothing: acquire() records the
 * call's one verdict.
 *
 * Parameters: the model row, acquire's tokens, whether it waits, its
 * max_wait_ms, key_aliases, caller (after a login pin), request_id and
 * ticket, the settings, when the call started, the caller's policy.
 * Returns the verdict (ticket set for a WAIT) and the rounds it took.
 * Raises: LL003 tokens > every TPM that applies.
 * Example: select * from google_ai_internal.acquire_on(m, 100, true, 5000, null,
 *              'bot', 'r1', null, cfg, clock_timestamp(), pol);
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
            p_cfg, p_started, p_policy
        );
        verdict := in_line.verdict;
        verdict.ticket := place;
        rounds := in_line.rounds;
        return;
    end if;

    -- NO_WAIT (or nothing to wait for): one try, the binding limit as the reason.
    verdict := google_ai_internal.reserve_round(
        p_model, cands, p_tokens, p_caller, p_request_id, p_cfg, false, p_policy
    );
    verdict.waited_ms := pg_catalog.round(
        extract(epoch from pg_catalog.clock_timestamp() - p_started) * 1000
    )::integer;
    rounds := 1;
end;
$$;

revoke all on function google_ai_internal.acquire_on(
    public.google_ai_model_limits, integer, boolean, integer, text [], text, text, uuid,
    public.google_ai_settings, timestamptz, google_ai_internal.caller_policy
) from public, anon, authenticated;

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
 * Policy (caller_policy): the class's reserves and priority apply in every
 * try. A caller with a daily budget for the model (google_ai_caller_budgets)
 * is refused caller_budget, until the next Pacific midnight, once it is
 * spent. A caller whose class may fall back is not refused for a model while
 * a model of its fallback chain (google_ai_fallbacks) can grant within the
 * same wait: a final refusal moves the wait to the next model (the ticket
 * follows), and the grant's ledger row records fallback_from.
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
    attempt record;
    verdict public.acquire_result;
    first_refusal public.acquire_result;
    rounds integer := 0;
    today date;
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
    if max_wait_ms is null or max_wait_ms < 0 or max_wait_ms > 86400000 then
        raise exception using errcode = 'LL007',
            message = pg_catalog.format('max_wait_ms must be between 0 and 86400000, got %s',
                                        coalesce(max_wait_ms::text, 'null')),
            hint = 'Pass the whole wait in milliseconds (0 with NO_WAIT).';
    end if;
    if key_aliases is not null and pg_catalog.cardinality(key_aliases) > 1000 then
        raise exception using errcode = 'LL007', message = 'key_aliases has more than 1000 entries',
            hint = 'Pass only the aliases this process holds.';
    end if;

    policy := google_ai_internal.caller_policy(caller);
    chain := case
        when policy.may_fall_back then google_ai_internal.fallback_chain(wanted.model)
        else array[wanted.model]
    end;
    -- A ticket that already waits on a later model of the chain stays there.
    if ticket is not null and pg_catalog.cardinality(chain) > 1 then
        step := coalesce(pg_catalog.array_position(chain, (
            select t.model from google_ai_internal.wait_tickets as t where t.id = ticket
        )), 1);
    end if;
    -- A ticket holder's call with max_wait_ms = 0 ends its wait in line.
    waiting := pg_catalog.upper(mode) = 'WAIT' and (max_wait_ms > 0 or ticket is not null);
    today := (google_ai_internal.clock() at time zone cfg.rpd_time_zone)::date;

    while step <= pg_catalog.cardinality(chain) loop
        served := case
            when step = 1 then wanted else google_ai_internal.resolve_model(chain[step])
        end;
        if not google_ai_internal.spend_budget(policy.caller, served.model, tokens, today, false) then
            verdict := null;
            verdict.granted := false;
            verdict.model := coalesce(served.api_model, served.model);
            verdict.reason := 'caller_budget';
            verdict.retry_after_ms := greatest(1, pg_catalog.ceil(extract(epoch from
                google_ai_internal.next_day_start(google_ai_internal.clock(), cfg.rpd_time_zone)
                - google_ai_internal.clock()) * 1000))::integer;
            verdict.waited_ms := pg_catalog.round(
                extract(epoch from pg_catalog.clock_timestamp() - started) * 1000
            )::integer;
        else
            wait_left := case
                when step = 1 then max_wait_ms
                else greatest(0, max_wait_ms - pg_catalog.round(
                    extract(epoch from pg_catalog.clock_timestamp() - started) * 1000
                )::integer)
            end;
            attempt := google_ai_internal.acquire_on(
                served, tokens, waiting and (wait_left > 0 or ticket is not null), wait_left,
                key_aliases, policy.caller, request_id, ticket, cfg, started, policy
            );
            verdict := attempt.verdict;
            rounds := rounds + attempt.rounds;
            if verdict.granted and not google_ai_internal.spend_budget(
                policy.caller, served.model, tokens, today, true
            ) then
                -- Granted, but a concurrent grant spent the budget first: refund it.
                perform public.release(verdict.reservation_id, 'caller_budget', false);
                verdict.granted := false;
                verdict.reservation_id := null;
                verdict.key_alias := null;
                verdict.env_var_name := null;
                verdict.reason := 'caller_budget';
                verdict.retry_after_ms := greatest(1, pg_catalog.ceil(extract(epoch from
                    google_ai_internal.next_day_start(google_ai_internal.clock(), cfg.rpd_time_zone)
                    - google_ai_internal.clock()) * 1000))::integer;
            end if;
        end if;
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
        update public.google_ai_reservations as r
        set details = coalesce(r.details, '{}'::jsonb) || pg_catalog.jsonb_build_object(
            'granted', pg_catalog.jsonb_build_object('fallback_from', wanted.model)
        )
        where r.id = verdict.reservation_id;
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
'Reserve one request and `tokens` input tokens of a model on the best key (RPM/TPM over an exact sliding window, RPD per Pacific day), under the caller''s class (priority, reserves), daily budget and fallback chain. Returns a grant (model = the model served) or a refusal row; raises only on bad input. WAIT always holds a ticket (returned; made here when none is passed): while reason = ''queued'', sleep retry_after_ms and call again with it. No call lasts longer than google_ai_settings.wait_slice_ms.';

revoke all on function public.acquire(text, integer, text, integer, text [], text, text, uuid)
from public, anon, authenticated;
grant execute on function public.acquire(text, integer, text, integer, text [], text, text, uuid)
to service_role;

/*
 * class_status: per caller class and model, the requests and input tokens in
 * the sliding window (every quota group together), the requests of the
 * current quota day, the waiters in line, and the class's priority and
 * reserves. Classes with no use and no waiter are listed once, with a null
 * model. Grants made before caller classes existed count as `default`.
 *
 * Returns one row per class and model. Raises nothing.
 * Example: select * from public.class_status();
 */
create or replace function public.class_status()
returns table (
    caller_class text,
    priority integer,
    model text,
    rpm_used bigint,
    tpm_used bigint,
    rpd_used bigint,
    waiters bigint,
    rpm_reserve numeric,
    tpm_reserve numeric,
    rpd_reserve numeric,
    may_fall_back boolean
)
language sql
stable
security definer
set search_path = ''
as $$
    with
    cfg as (select s.* from google_ai_internal.settings() as s),
    now_ as (select google_ai_internal.clock() as at_now),
    used as (
        select
            coalesce(r.caller_class, 'default') as caller_class,
            r.model,
            sum(r.counted_requests) filter (
                where r.granted_at > n.at_now - google_ai_internal.window_hold(c)
            ) as rpm_used,
            sum(r.counted_tokens) filter (
                where r.granted_at > n.at_now - google_ai_internal.window_hold(c)
            ) as tpm_used,
            sum(r.counted_requests) as rpd_used
        from public.google_ai_reservations as r, cfg as c, now_ as n
        where r.rpd_day = (n.at_now at time zone c.rpd_time_zone)::date
        group by 1, 2
    ),
    waiting as (
        select coalesce(t.caller_class, 'default') as caller_class, t.model, count(*) as waiters
        from google_ai_internal.wait_tickets as t, now_ as n
        where t.alive_until > n.at_now
        group by 1, 2
    ),
    per_model as (
        select
            coalesce(u.caller_class, w.caller_class) as caller_class,
            coalesce(u.model, w.model) as model,
            coalesce(u.rpm_used, 0) as rpm_used,
            coalesce(u.tpm_used, 0) as tpm_used,
            coalesce(u.rpd_used, 0) as rpd_used,
            coalesce(w.waiters, 0) as waiters
        from used as u
        full join waiting as w on w.caller_class = u.caller_class and w.model = u.model
    )
    select
        k.name, k.priority, m.model, coalesce(m.rpm_used, 0), coalesce(m.tpm_used, 0),
        coalesce(m.rpd_used, 0), coalesce(m.waiters, 0), k.rpm_reserve, k.tpm_reserve,
        k.rpd_reserve, k.may_fall_back
    from public.google_ai_caller_classes as k
    left join per_model as m on m.caller_class = k.name
    order by k.priority, k.name, m.model
$$;

comment on function public.class_status() is
'Per caller class and model: requests and input tokens in the sliding window, requests today, waiters, and the class''s priority and reserves.';

revoke all on function public.class_status() from public, anon, authenticated;
grant execute on function public.class_status() to service_role;
