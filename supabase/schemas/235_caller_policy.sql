-- Caller policy: a caller's class, read once per acquire(). Lock order: reads
-- only (220_window_protocol.sql).

/*
 * caller_policy: the policy acquire() applies to a caller. A session whose
 * login is some policy row's login_role acts as that row's caller, whatever
 * name it passed; a name no row holds is in class `default` (priority 50, no
 * fallback, should that row be gone). It carries the class's limits for one
 * end user (end_user_policy fills in the person). The policy is paced (try_reserve)
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
    -- One statement, in plpgsql so that its plan is kept: acquire reads its
    -- caller's policy on every call.
    select
        who.caller, coalesce(c.name, 'default'), coalesce(c.priority, 50),
        coalesce(c.may_fall_back, false),
        above.higher_classes, above.higher_rpm, above.higher_tpm, above.rpd_share, above.paced,
        c.fallback_after_ms, budgets.models, c.end_user_rpm, c.end_user_rpd,
        null::bytea, false
    into pol
    from (
        select coalesce(
            (select p.caller from public.google_ai_caller_policies as p
             where p.login_role = session_user),
            p_caller
        ) as caller
    ) as who
    left join public.google_ai_caller_classes as c on c.name = coalesce(
        (select p.caller_class from public.google_ai_caller_policies as p where p.caller = who.caller),
        'default'
    )
    cross join lateral (
        select
            coalesce(pg_catalog.array_agg(h.name order by h.name)
                filter (where h.rpm_reserve > 0 or h.tpm_reserve > 0), '{}') as higher_classes,
            coalesce(pg_catalog.array_agg(h.rpm_reserve order by h.name)
                filter (where h.rpm_reserve > 0 or h.tpm_reserve > 0), '{}') as higher_rpm,
            coalesce(pg_catalog.array_agg(h.tpm_reserve order by h.name)
                filter (where h.rpm_reserve > 0 or h.tpm_reserve > 0), '{}') as higher_tpm,
            1 - coalesce(sum(h.rpd_reserve), 0) as rpd_share,
            coalesce(bool_or(exists (
                select from public.google_ai_caller_policies as p where p.caller_class = h.name
            )), false) as paced
        from public.google_ai_caller_classes as h
        where h.priority < coalesce(c.priority, 50)
    ) as above
    cross join lateral (
        select coalesce(pg_catalog.array_agg(b.model), '{}') as models
        from public.google_ai_caller_budgets as b
        where b.caller = who.caller
    ) as budgets;
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
language plpgsql
stable
set search_path = ''
as $$
begin
    return (
        with recursive chain (model, depth, seen) as (
            select p_model, 0, array[p_model]
            union all
            select f.fallback_model, c.depth + 1, c.seen || f.fallback_model
            from chain as c
            inner join public.google_ai_fallbacks as f on f.model = c.model
            where c.depth < 4 and f.fallback_model <> all(c.seen)
        )
        select pg_catalog.array_agg(c.model order by c.depth) from chain as c
    );
end;
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
