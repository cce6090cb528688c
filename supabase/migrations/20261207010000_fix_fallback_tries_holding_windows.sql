-- A refused NO_WAIT try on one model of a fallback chain let its window go
-- only at the end of the transaction, though the transaction went on: to
-- the chain's next model, or, in a WAIT's fallback in time (fall_back_now),
-- to the wait in line on the model asked for, sleeping with the other
-- model's window row locked. Every caller of that model then waited for the
-- sleeper's slice (a NO_WAIT on it blocked up to wait_slice_ms), and a
-- waiter holding its own ticket while locking that window deadlocked with
-- the sleeper waiting for that ticket (seen once in the aging policy run:
-- 40P01 raised to the bot). Now a try that anything follows in its
-- transaction is a subtransaction rolled back on refusal, as every WAIT
-- try already was (acquire_on's new p_then_more, reserve_round's
-- p_release_on_refusal); a chain's last NO_WAIT try is unchanged.

drop function google_ai_internal.acquire_within_budget(
    public.google_ai_model_limits, integer, boolean, integer, text [], text, text, uuid,
    public.google_ai_settings, timestamptz, google_ai_internal.caller_policy, integer, date
);
drop function google_ai_internal.acquire_on(
    public.google_ai_model_limits, integer, boolean, integer, text [], text, text, uuid,
    public.google_ai_settings, timestamptz, google_ai_internal.caller_policy, integer
);

/*
 * acquire_on: acquire()'s work on one model of its fallback chain: the
 * candidates (LL003 when the request can never fit), then a WAIT in line
 * (wait_in_line) or one NO_WAIT try. Records nothing: acquire() records the
 * call's one verdict.
 *
 * Parameters: the model row, acquire's tokens, whether it waits, its
 * max_wait_ms, key_aliases, caller (after a login pin), request_id and
 * ticket, the settings, when the call started, the caller's policy,
 * p_yield_after_ms (wait_in_line's) and p_then_more: whether the
 * transaction goes on after a NO_WAIT refusal to lock another window or
 * to wait (a later model of the chain, a wait in line), so the refused
 * try must let its window go (reserve_round's p_release_on_refusal).
 * Returns the verdict (ticket set for a WAIT) and the rounds it took.
 * Raises: LL003 tokens > every TPM that applies.
 * Example: select * from google_ai_internal.acquire_on(m, 100, true, 5000, null,
 *              'bot', 'r1', null, cfg, clock_timestamp(), pol, null, false);
 */
create function google_ai_internal.acquire_on(
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
    p_then_more boolean,
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
        p_model, cands, p_tokens, p_caller, p_request_id, p_cfg, p_then_more, p_policy, null
    );
    verdict.waited_ms := pg_catalog.round(
        extract(epoch from pg_catalog.clock_timestamp() - p_started) * 1000
    )::integer;
    rounds := 1;
end;
$$;

revoke all on function google_ai_internal.acquire_on(
    public.google_ai_model_limits, integer, boolean, integer, text [], text, text, uuid,
    public.google_ai_settings, timestamptz, google_ai_internal.caller_policy, integer, boolean
) from public, anon, authenticated;

/*
 * acquire_within_budget: acquire_on under the caller's daily budget for the
 * model: refused caller_budget when it is spent, and a grant counted
 * against it (refunded and refused when a concurrent grant spent it first).
 *
 * Parameters: acquire_on's, then p_today (the Pacific day).
 * Returns the verdict and the rounds it took. Raises what acquire_on raises.
 * Example: select * from google_ai_internal.acquire_within_budget(m, 100, true, 5000,
 *              null, 'bot', 'r1', null, cfg, clock_timestamp(), pol, null, false, current_date);
 */
create function google_ai_internal.acquire_within_budget(
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
    p_then_more boolean,
    p_today date,
    out verdict public.acquire_result,
    out rounds integer
)
language plpgsql
volatile
set search_path = ''
as $$
declare
    -- Most callers have no budget: no budget row is read for them.
    budgeted boolean := p_model.model = any(p_policy.budget_models);
    attempt record;
begin
    rounds := 0;
    if budgeted and not google_ai_internal.spend_budget(
        p_caller, p_model.model, p_tokens, p_today, false
    ) then
        verdict := google_ai_internal.budget_refusal(p_model, p_cfg, p_started);
        return;
    end if;
    attempt := google_ai_internal.acquire_on(
        p_model, p_tokens, p_wait, p_max_wait_ms, p_key_aliases, p_caller, p_request_id,
        p_ticket, p_cfg, p_started, p_policy, p_yield_after_ms, p_then_more
    );
    verdict := attempt.verdict;
    rounds := attempt.rounds;
    if budgeted and verdict.granted and not google_ai_internal.spend_budget(
        p_caller, p_model.model, p_tokens, p_today, true
    ) then
        perform google_ai_internal.release_reservation(
            google_ai_internal.lock_reservation(verdict.reservation_id), 'caller_budget', false
        );
        verdict := google_ai_internal.budget_refusal(p_model, p_cfg, p_started);
    end if;
end;
$$;

revoke all on function google_ai_internal.acquire_within_budget(
    public.google_ai_model_limits, integer, boolean, integer, text [], text, text, uuid,
    public.google_ai_settings, timestamptz, google_ai_internal.caller_policy, integer, boolean,
    date
) from public, anon, authenticated;

/*
 * fall_back_now: fallback in time: the model asked for has not granted
 * within the class's fallback_after_ms; one try (NO_WAIT, under the
 * caller's budget) on each later model of the chain, in order, until one
 * grants. Each refused try lets its window go: a later model's try or the
 * wait on the step waited on follows it in the same transaction.
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
            p_started, p_policy, null, true, p_today
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
 * acquire_along_chain: acquire()'s walk along the fallback chain from the
 * model its ticket waits on: on each model, first the fallback in time
 * (fall_back_now, once the wait has lasted the class's fallback_after_ms),
 * then a wait in line or one try under the caller's budget
 * (acquire_within_budget). A 'queued' answer ends the walk (the wait goes
 * on); a final refusal moves it to the next model, keeping the ticket and
 * what remains of max_wait_ms. When every model refuses, the first refusal
 * says why, for the model asked for.
 *
 * Parameters: the model asked for (its limits row) and its chain, the step
 * its ticket waits on and since when (null:
 * no ticket yet), acquire's tokens, whether it waits, max_wait_ms,
 * key_aliases, the policy, request_id and ticket, the settings, when the call
 * started, the Pacific day.
 * Returns the verdict, the model it is for and the rounds taken. Raises what
 * acquire_on raises.
 * Example: select * from google_ai_internal.acquire_along_chain(m, array['gemma-3-27b'], 1,
 *              null, 100, true, 5000, null, pol, 'r1', null, cfg, clock_timestamp(), current_date);
 */
create or replace function google_ai_internal.acquire_along_chain(
    p_wanted public.google_ai_model_limits,
    p_chain text [],
    p_step integer,
    p_waiting_since timestamptz,
    p_tokens integer,
    p_waiting boolean,
    p_max_wait_ms integer,
    p_key_aliases text [],
    p_policy google_ai_internal.caller_policy,
    p_request_id text,
    p_ticket uuid,
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
    step integer := p_step;
    wait_left integer;
    yield_after integer;
    attempt record;
    first_refusal public.acquire_result;
begin
    rounds := 0;
    while step <= pg_catalog.cardinality(p_chain) loop
        served := case
            when step = 1 then p_wanted else google_ai_internal.resolve_model(p_chain[step])
        end;
        yield_after := case
            when step < pg_catalog.cardinality(p_chain) then p_policy.fallback_after_ms
        end;
        if p_waiting_since <= google_ai_internal.clock()
            - pg_catalog.make_interval(secs => yield_after / 1000.0) then
            attempt := google_ai_internal.fall_back_now(
                p_chain, step, p_tokens, p_key_aliases, p_policy, p_request_id, p_cfg, p_started,
                p_today
            );
            rounds := rounds + attempt.rounds;
            if (attempt.verdict).granted then
                delete from google_ai_internal.wait_tickets as t where t.id = p_ticket;
                verdict := attempt.verdict;
                verdict.waited_ms := pg_catalog.round(extract(epoch from
                    google_ai_internal.clock() - p_waiting_since
                ) * 1000)::integer;
                served := attempt.served;
                return;
            end if;
        end if;
        wait_left := greatest(0, p_max_wait_ms - case
            when step = p_step then 0
            else pg_catalog.round(extract(epoch from pg_catalog.clock_timestamp() - p_started) * 1000)
        end)::integer;
        attempt := google_ai_internal.acquire_within_budget(
            served, p_tokens, p_waiting and (wait_left > 0 or p_ticket is not null), wait_left,
            p_key_aliases, p_policy.caller, p_request_id, p_ticket, p_cfg, p_started, p_policy,
            yield_after, step < pg_catalog.cardinality(p_chain), p_today
        );
        verdict := attempt.verdict;
        rounds := rounds + attempt.rounds;
        exit when verdict.granted or verdict.reason = 'queued';
        if first_refusal.reason is null then
            first_refusal := verdict;
        end if;
        step := step + 1;
    end loop;
    if not verdict.granted and verdict.reason <> 'queued' then
        verdict := first_refusal;
        served := p_wanted;
    end if;
end;
$$;

revoke all on function google_ai_internal.acquire_along_chain(
    public.google_ai_model_limits, text [], integer, timestamptz, integer, boolean, integer, text [],
    google_ai_internal.caller_policy, text, uuid, public.google_ai_settings, timestamptz, date
) from public, anon, authenticated;
