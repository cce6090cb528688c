-- acquire: the one way to reserve quota, and how its verdict is recorded.

/*
 * fold_refusal: count a refusal into the newest google_ai_refusals row of
 * the same fold (caller, end user, model, key set, reported key and reason) when that
 * row saw its last refusal at most refusal_fold_ms ago and began less than
 * one window ago: its count and last time move on (one HOT update, locking
 * only that row).
 *
 * Parameters: p_fold (the fold's hash), the verdict, the model, caller and
 * sorted key set, the settings, p_now, the end user's hash.
 * Returns whether the refusal was folded. Raises nothing.
 * Example: select google_ai_internal.fold_refusal(42, v, 'gemma-3-27b', 'bot', null, cfg, now(),
 *                                                 null);
 */
create or replace function google_ai_internal.fold_refusal(
    p_fold bigint,
    p_verdict public.acquire_result,
    p_model text,
    p_caller text,
    p_key_set text [],
    p_cfg public.google_ai_settings,
    p_now timestamptz,
    p_end_user_hash bytea
)
returns boolean
language plpgsql
volatile
set search_path = ''
as $$
begin
    update public.google_ai_refusals as f
    set
        refusals = f.refusals + 1,
        last_at = greatest(f.last_at, p_now),
        retry_after_ms = p_verdict.retry_after_ms,
        waited_ms = greatest(f.waited_ms, p_verdict.waited_ms)
    where
        f.id = (
            select g.id
            from public.google_ai_refusals as g
            where
                g.fold_key = p_fold
                and g.first_at > p_now - pg_catalog.make_interval(secs => p_cfg.window_ms / 1000.0)
            order by g.first_at desc
            limit 1
        )
        and f.last_at >= p_now - pg_catalog.make_interval(secs => p_cfg.refusal_fold_ms / 1000.0)
        -- The hash picks the row; the values decide.
        and f.model = p_model
        and f.caller is not distinct from p_caller
        and f.end_user_hash is not distinct from p_end_user_hash
        and f.key_set is not distinct from p_key_set
        and f.key_alias is not distinct from p_verdict.key_alias
        and f.reason is not distinct from p_verdict.reason;
    return found;
end;
$$;

revoke all on function google_ai_internal.fold_refusal(
    bigint, public.acquire_result, text, text, text [], public.google_ai_settings, timestamptz,
    bytea
) from public, anon, authenticated;

/*
 * record_acquire_verdict: record one acquire() verdict.
 *
 * A grant writes nothing here: its ledger row (written by try_reserve) is its
 * record. A refusal folds into the newest row of the same caller, end user,
 * model, key set (p_key_aliases, sorted; null = every key), reported key and reason
 * (fold_refusal); otherwise a new row starts. Two callers
 * that start the same fold at the same instant may start two rows; every
 * refusal is still counted once.
 *
 * Parameters: the verdict, the resolved model, acquire's own arguments (mode
 * upper-cased), the number of reservation rounds, the key set and the end
 * user's hash.
 * Returns nothing. Raises nothing of its own.
 * Example: perform google_ai_internal.record_acquire_verdict(
 *              verdict, 'gemma-3-27b', 1200, 'WAIT', 30000, 3, 'bot', 'msg-42',
 *              array['bot-key-1'], null);
 */
create or replace function google_ai_internal.record_acquire_verdict(
    p_verdict public.acquire_result,
    p_model text,
    p_tokens integer,
    p_mode text,
    p_max_wait_ms integer,
    p_rounds integer,
    p_caller text,
    p_request_id text,
    p_key_aliases text [] default null,
    p_end_user_hash bytea default null
)
returns void
language plpgsql
volatile
set search_path = ''
set plan_cache_mode = force_generic_plan
as $$
declare
    cfg public.google_ai_settings;
    at_now timestamptz;
    wanted_set text [];
    fold bigint;
begin
    if p_verdict.granted then
        return;
    end if;
    cfg := google_ai_internal.settings();
    at_now := google_ai_internal.clock();
    if p_key_aliases is not null then
        wanted_set := array(
            select distinct a from pg_catalog.unnest(p_key_aliases) as a order by a
        );
    end if;
    -- %L quotes values and spells null as NULL: distinct tuples, distinct text.
    fold := pg_catalog.hashtextextended(pg_catalog.format(
        '%L %L %L %L %L %L', p_caller, p_model, wanted_set::text, p_verdict.key_alias,
        p_verdict.reason, p_end_user_hash
    ), 0);

    if cfg.refusal_fold_ms > 0 then
        if google_ai_internal.fold_refusal(
            fold, p_verdict, p_model, p_caller, wanted_set, cfg, at_now, p_end_user_hash
        ) then
            return;
        end if;
    end if;

    insert into public.google_ai_refusals (
        fold_key, first_at, last_at, model, key_alias, key_set, reason, caller, request_id,
        mode, tokens, max_wait_ms, waited_ms, rounds, retry_after_ms, end_user_hash
    ) values (
        fold, at_now, at_now, p_model, p_verdict.key_alias, wanted_set, p_verdict.reason,
        p_caller, p_request_id, p_mode, p_tokens, p_max_wait_ms, p_verdict.waited_ms,
        p_rounds, p_verdict.retry_after_ms, p_end_user_hash
    );
end;
$$;

revoke all on function google_ai_internal.record_acquire_verdict(
    public.acquire_result, text, integer, text, integer, integer, text, text, text [], bytea
) from public, anon, authenticated;

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
 *              null, 'bot', 'r1', null, cfg, clock_timestamp(), pol, null, false, current_date);
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
 * check_acquire_args: acquire()'s arguments, checked before any state is
 * touched.
 *
 * Parameters: acquire's model, tokens, mode, max_wait_ms, key_aliases,
 * caller, request_id and end_user.
 * Returns the model's limits row. Raises: LL001 unknown model, LL002 bad
 * tokens, LL004 unknown mode, LL007 bad max_wait_ms, too many key_aliases,
 * text too long, or an end_user that is empty or too long.
 * Example: m := google_ai_internal.check_acquire_args('gemma-3-27b', 100, 'WAIT', 5000,
 *                                                     null, 'bot', 'r1', 'tg:123456');
 */
create or replace function google_ai_internal.check_acquire_args(
    p_model text,
    p_tokens integer,
    p_mode text,
    p_max_wait_ms integer,
    p_key_aliases text [],
    p_caller text,
    p_request_id text,
    p_end_user text
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
    perform google_ai_internal.check_end_user(p_end_user);
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
    text, integer, text, integer, text [], text, text, text
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
language plpgsql
volatile
set search_path = ''
as $$
begin
    update public.google_ai_reservations as r
    set
        details = coalesce(r.details, '{}'::jsonb) || pg_catalog.jsonb_build_object(
            'granted', pg_catalog.jsonb_build_object('fallback_from', p_wanted)
        ),
        waited_ms = greatest(r.waited_ms, p_verdict.waited_ms)
    where r.id = p_verdict.reservation_id;
end;
$$;

revoke all on function google_ai_internal.mark_fallback(public.acquire_result, text)
from public, anon, authenticated;

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

/*
 * acquire_within_end_user_limits: acquire_along_chain for one end user of
 * the caller (p_policy.end_user_hash; none: acquire_along_chain alone). A
 * person past their limits (end_user_free_at) is answered by end_user_wait
 * before any pool slot is taken: 'queued' until their next slot when a WAIT
 * reaches it, else refused end_user_limit. A grant is then counted against
 * the person in turn with their other grants (spend_end_user); when another
 * process took the person's last slot first, the grant is given back unsent
 * and the person answered the same way.
 *
 * Parameters: acquire_along_chain's.
 * Returns the verdict, the model it is for and the rounds taken. Raises what
 * acquire_on raises.
 * Example: select * from google_ai_internal.acquire_within_end_user_limits(m,
 *              array['gemma-3-27b'], 1, null, 100, true, 5000, null, pol, 'r1', null, cfg,
 *              clock_timestamp(), current_date);
 */
create or replace function google_ai_internal.acquire_within_end_user_limits(
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
    free_at timestamptz := google_ai_internal.end_user_free_at(
        p_policy, p_cfg, google_ai_internal.clock(), false
    );
    along record;
begin
    rounds := 0;
    if free_at is null then
        select * into along
        from google_ai_internal.acquire_along_chain(
            p_wanted, p_chain, p_step, p_waiting_since, p_tokens, p_waiting, p_max_wait_ms,
            p_key_aliases, p_policy, p_request_id, p_ticket, p_cfg, p_started, p_today
        );
        verdict := along.verdict;
        served := along.served;
        rounds := along.rounds;
        if not verdict.granted or google_ai_internal.spend_end_user(p_policy, p_cfg) then
            return;
        end if;
        perform google_ai_internal.release_reservation(
            google_ai_internal.lock_reservation(verdict.reservation_id), 'end_user_limit', false
        );
        free_at := coalesce(
            google_ai_internal.end_user_free_at(p_policy, p_cfg, google_ai_internal.clock(), false),
            google_ai_internal.clock()
        );
    end if;
    verdict := google_ai_internal.end_user_wait(
        free_at, p_wanted, p_waiting, p_max_wait_ms, p_ticket, p_started
    );
    served := p_wanted;
end;
$$;

revoke all on function google_ai_internal.acquire_within_end_user_limits(
    public.google_ai_model_limits, text [], integer, timestamptz, integer, boolean, integer, text [],
    google_ai_internal.caller_policy, text, uuid, public.google_ai_settings, timestamptz, date
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
 *   end_user     who the call is for, on the caller's side (a bot's person,
 *                e.g. 'tg:123456'; 1..200 characters, null: nobody in
 *                particular). Stored only as a keyed hash (end_user_hash).
 *                The caller's class limits each person per minute and per
 *                Pacific day (end_user_rpm, end_user_rpd; a
 *                google_ai_end_users row raises, lowers or blocks one), and
 *                in a WAIT queue the people of one class take turns.
 *
 * Returns one acquire_result row. A refusal is a row with granted = false and
 * reason in (rpm, tpm, rpd, cooldown, no_key, wait_timeout, caller_budget,
 * end_user_limit, queued), never an exception, so its audit row is kept.
 * `model` is the API id of the model served, which a fallback may have
 * changed.
 *
 * The one waiting rule: while reason = 'queued', sleep retry_after_ms (0 =
 * call at once) without holding a connection, then call again with the same
 * arguments and the returned ticket. A WAIT always holds a ticket (made here
 * when none is passed); its first call takes a place in the queue of its
 * model and key set and fixes the deadline. The queue serves by class
 * priority (aged over google_ai_settings.aging_ms, so no class starves), then
 * the end users' turns (line_ahead), then ticket order. No call stays in the
 * database longer than wait_slice_ms, so
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
 * End users (acquire_within_end_user_limits): a person past their limits is
 * answered before any pool slot is taken: refused end_user_limit with a
 * truthful retry_after_ms (null while blocked), or, for a WAIT whose
 * max_wait_ms reaches their next slot, 'queued' until then (out of line:
 * queue_position null). Refusals fold per person too.
 *
 * Raises: LL001 unknown model, LL002 bad tokens, LL003 tokens > TPM,
 *         LL004 unknown mode, LL007 bad max_wait_ms, text too long, or an
 *         end_user that is empty or longer than 200 characters.
 * Example: select * from public.acquire('gemma-3-27b', 1200, 'WAIT', 30000,
 *                                       array['bot-key-1'], 'bot', 'msg-42',
 *                                       end_user => 'tg:123456');
 */
create or replace function public.acquire(
    model text,
    tokens integer,
    mode text default 'NO_WAIT',
    max_wait_ms integer default 0,
    key_aliases text [] default null,
    caller text default null,
    request_id text default null,
    ticket uuid default null,
    end_user text default null
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
    held_model text;
    held_since timestamptz;
    along record;
    verdict public.acquire_result;
    today date;
begin
    wanted := google_ai_internal.check_acquire_args(
        acquire.model, tokens, mode, max_wait_ms, key_aliases, caller, request_id, end_user
    );
    policy := google_ai_internal.end_user_policy(google_ai_internal.caller_policy(caller), end_user);
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

    select * into along
    from google_ai_internal.acquire_within_end_user_limits(
        wanted, chain, step, held_since, tokens, waiting, max_wait_ms, key_aliases, policy,
        request_id, ticket, cfg, started, today
    );
    verdict := along.verdict;
    served := along.served;
    if verdict.reason = 'queued' then
        return verdict;  -- the wait goes on; its last call audits all of it
    end if;

    if verdict.granted and served.model <> wanted.model then
        perform google_ai_internal.mark_fallback(verdict, wanted.model);
    end if;
    perform google_ai_internal.record_acquire_verdict(
        verdict, served.model, tokens, pg_catalog.upper(mode), max_wait_ms, along.rounds,
        policy.caller, request_id, key_aliases, policy.end_user_hash
    );
    return verdict;
end;
$$;

comment on function public.acquire(text, integer, text, integer, text [], text, text, uuid, text) is
'Reserve one request and `tokens` input tokens of a model on the best key (RPM/TPM over an exact sliding window, RPD per Pacific day), under the caller''s class (priority, reserves, per-end-user limits), daily budget and fallback chain. Returns a grant (model = the model served) or a refusal row; raises only on bad input. WAIT always holds a ticket (returned; made here when none is passed): while reason = ''queued'', sleep retry_after_ms and call again with it (queue_position and expected_wait_ms say where it stands). A class''s fallback_after_ms moves a long wait to a fallback that can grant now. No call lasts longer than google_ai_settings.wait_slice_ms.';

revoke all on function public.acquire(text, integer, text, integer, text [], text, text, uuid, text)
from public, anon, authenticated;
grant execute on function public.acquire(text, integer, text, integer, text [], text, text, uuid, text)
to service_role;
