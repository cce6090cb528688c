-- Who used what: `llm-limits report` and Supabase Studio read the same
-- figures from one RPC, public.usage_report.
--
-- Every figure comes from a record the RPCs already keep; nothing new is
-- written per call:
--   * the ledger (google_ai_reservations): grants, commits, counted input
--     tokens, output tokens and each grant's wait, with its caller;
--   * the folded refusals (google_ai_refusals): refusals of our own, by
--     reason, each row standing for `refusals` of them;
--   * the audit records (google_ai_audit_records): Google's 429s
--     (`rate_limited`), whose caller is read from the ledger while the ledger
--     still has the grant;
--   * the day roll-ups (google_ai_event_counts): what run_maintenance()
--     counted before it deleted aged-out detail. They keep counts and input
--     tokens per UTC day, key and model, but no caller, no refusal reason, no
--     output tokens and no waits.
-- Detail and roll-ups never overlap (maintenance deletes what it counts, in
-- the same transaction), so they are added together. google_ai_usage_counters
-- is a second roll-up of the same ledger rows (requests and tokens per key
-- and minute or Pacific day); it is not read here, because adding it to the
-- event counts would count those rows twice and it has no refusals or 429s.
--
-- by => 'class' groups by the caller's class (caller_class), by =>
-- 'end_user' by the person a call was for (end_user_label of the keyed
-- hash), and fallbacks count the grants acquire served from a fallback chain
-- (is_fallback).

/*
 * caller_class: the class a caller belongs to now, for usage_report's
 * by => 'class': its google_ai_caller_policies row, else 'default' (as
 * acquire's caller_policy reads it, without the login pin).
 *
 * Parameters: caller, as the ledger records it (may be null).
 * Returns the class name. Raises nothing.
 * Example: select google_ai_internal.caller_class('kaggle-eval');  -- 'default'
 */
create or replace function google_ai_internal.caller_class(caller text)
returns text
language sql
stable
set search_path = ''
as $$
    select coalesce(
        (select p.caller_class from public.google_ai_caller_policies as p
         where p.caller = caller_class.caller),
        'default'
    )
$$;

revoke all on function google_ai_internal.caller_class(text) from public, anon, authenticated;

/*
 * is_fallback: whether a grant served another model than the one its caller
 * asked for: acquire records the model asked for as fallback_from in the
 * ledger row's details.
 *
 * Parameters: r, a ledger row. Returns a boolean. Raises nothing.
 * Example: select google_ai_internal.is_fallback(r) from public.google_ai_reservations as r;
 */
create or replace function google_ai_internal.is_fallback(r public.google_ai_reservations)
returns boolean
language sql
stable
set search_path = ''
as $$
    select r.details #> '{granted,fallback_from}' is not null
$$;

revoke all on function google_ai_internal.is_fallback(public.google_ai_reservations)
from public, anon, authenticated;

/*
 * usage_events: what usage_report counts, one row per event between
 * p_since and p_until: each grant (with its tokens, wait and whether a
 * fallback served it), each fold of refusals, each 429 from Google (its
 * caller is the grant's), and the day roll-ups of the detail maintenance
 * has deleted (detail_kept false).
 *
 * Parameters: p_since, p_until.
 * Returns the rows with their counts (n_requests, n_committed, n_input,
 * n_output, n_refusals, reason, n_429s, waited_ms, n_fallbacks) and the end
 * user's hash. Raises nothing.
 * Example: select * from google_ai_internal.usage_events(now() - interval '1 day', now());
 */
create or replace function google_ai_internal.usage_events(p_since timestamptz, p_until timestamptz)
returns table (
    caller text,
    model text,
    at timestamptz,
    detail_kept boolean,
    n_requests integer,
    n_committed integer,
    n_input bigint,
    n_output bigint,
    n_refusals integer,
    reason text,
    n_429s integer,
    waited_ms integer,
    n_fallbacks integer,
    end_user_hash bytea
)
language sql
stable
set search_path = ''
as $$
    -- One row per grant.
    select
        r.caller, r.model, r.granted_at as at, true as detail_kept,
        1 as n_requests, (r.status = 'committed')::integer as n_committed,
        r.counted_tokens::bigint as n_input, coalesce(r.completion_tokens, 0)::bigint as n_output,
        0 as n_refusals, null::text as reason, 0 as n_429s, r.waited_ms,
        google_ai_internal.is_fallback(r)::integer as n_fallbacks, r.end_user_hash
    from public.google_ai_reservations as r
    where r.granted_at >= p_since and r.granted_at < p_until
    union all
    -- One row per fold of refusals.
    select
        f.caller, f.model, f.first_at, true,
        0, 0, 0, 0, f.refusals, f.reason, 0, null, 0, f.end_user_hash
    from public.google_ai_refusals as f
    where f.first_at >= p_since and f.first_at < p_until
    union all
    -- One row per 429 from Google; its caller is the grant's.
    select
        r.caller, a.model, a.ts, r.id is not null,
        0, 0, 0, 0, 0, null, 1, null, 0, r.end_user_hash
    from public.google_ai_audit_records as a
    left join public.google_ai_reservations as r on r.id = a.reservation_id
    where a.event = 'rate_limited' and a.ts >= p_since and a.ts < p_until
    union all
    -- Day roll-ups of detail that maintenance has deleted.
    select
        null, e.model, e.day::timestamp at time zone 'UTC', false,
        (case when e.event = 'granted' then e.events else 0 end)::integer,
        (case when e.event = 'committed' then e.events else 0 end)::integer,
        case when e.event = 'granted' then e.tokens else 0 end,
        0,
        (case when e.event = 'refused' then e.events else 0 end)::integer,
        case when e.event = 'refused' then 'unknown' end,
        (case when e.event = 'rate_limited' then e.events else 0 end)::integer,
        null, 0, null
    from public.google_ai_event_counts as e
    where
        e.event in ('granted', 'committed', 'refused', 'rate_limited')
        and e.day >= (p_since at time zone 'UTC')::date
        and e.day::timestamp at time zone 'UTC' < p_until
$$;

revoke all on function google_ai_internal.usage_events(timestamptz, timestamptz)
from public, anon, authenticated;

/*
 * usage_bucket: the usage_report bucket an event falls in: its caller, its
 * caller's class, its end user (their hash's label), its model or its UTC
 * day; detail that maintenance has rolled up has no caller nor end user any
 * more ('(rolled up)').
 *
 * Parameters: p_by (caller, class, end_user, model or day), then the
 * event's caller, model, time, whether its detail is kept and end user's
 * hash (a usage_events row's).
 * Returns the bucket's name. Raises nothing.
 * Example: select google_ai_internal.usage_bucket('class', 'telegram-bot', 'gemma-3-27b', now(), true,
 *                                                 null);
 */
create or replace function google_ai_internal.usage_bucket(
    p_by text, p_caller text, p_model text, p_at timestamptz, p_detail_kept boolean,
    p_end_user_hash bytea
)
returns text
language sql
stable
set search_path = ''
as $$
    select case
        when p_by in ('caller', 'class', 'end_user') and not p_detail_kept then '(rolled up)'
        when p_by = 'caller' then coalesce(p_caller, '(no caller)')
        when p_by = 'end_user' then
            coalesce(google_ai_internal.end_user_label(p_end_user_hash), '(no end user)')
        when p_by = 'class' then google_ai_internal.caller_class(p_caller)
        when p_by = 'model' then p_model
        else pg_catalog.to_char(p_at at time zone 'UTC', 'YYYY-MM-DD')
    end
$$;

revoke all on function google_ai_internal.usage_bucket(
    text, text, text, timestamptz, boolean, bytea
) from public, anon, authenticated;

/*
 * usage_report: requests, tokens, refusals, 429s, waits and fallbacks over a
 * period, one row per caller, model, UTC day, caller class or end user.
 *
 * Parameters:
 *   since  start of the period (inclusive); null: 7 days before `until`
 *   until  end of the period (exclusive); null: now
 *   by     'caller' (default), 'model', 'day' (UTC, as YYYY-MM-DD), 'class'
 *          or 'end_user' (the first 8 hex digits of the person's keyed hash)
 *
 * Returns one row per bucket, ordered by bucket:
 *   bucket              the caller ('(no caller)' when none was given), model,
 *                       day, class or end user ('(no end user)'); '(rolled
 *                       up)' for caller, class and end user figures read
 *                       from day roll-ups, whose caller is gone
 *   requests            grants made (each attempt of a call is one)
 *   committed           grants settled with Google's usage
 *   input_tokens        input tokens counted against TPM (Google's count once
 *                       committed; the estimate of a sent call never committed)
 *   output_tokens       completion tokens (detail only: roll-ups drop them)
 *   refusals            refusals of our own (acquire said no), every folded
 *                       refusal counted
 *   refusals_by_reason  {reason: count}; 'unknown' for rolled-up refusals
 *   google_429s         429s Google answered to a granted call
 *   wait_p50_ms, wait_p95_ms  how long grants waited in acquire (detail only)
 *   fallbacks           grants served by another model than asked (see
 *                       is_fallback)
 *   rolled_up_requests  how many of `requests` come from roll-ups; roll-ups
 *                       count whole UTC days that overlap the period
 *
 * Raises: LL007 when `by` is not one of the five, or since >= until.
 * Example: select * from public.usage_report(now() - interval '7 days', by => 'model');
 */
create or replace function public.usage_report(
    since timestamptz default null,
    until timestamptz default null,
    by text default 'caller'
)
returns table (
    bucket text,
    requests bigint,
    committed bigint,
    input_tokens bigint,
    output_tokens bigint,
    refusals bigint,
    refusals_by_reason jsonb,
    google_429s bigint,
    wait_p50_ms integer,
    wait_p95_ms integer,
    fallbacks bigint,
    rolled_up_requests bigint
)
language plpgsql
stable
security definer
set search_path = ''
-- A plan over the ledger's union with three small tables: JIT only adds
-- compile time to a query that runs once.
set jit = off
as $$
declare
    period_end timestamptz := coalesce(usage_report.until, google_ai_internal.clock());
    period_start timestamptz := coalesce(usage_report.since, period_end - interval '7 days');
begin
    if usage_report.by is null
        or usage_report.by not in ('caller', 'model', 'day', 'class', 'end_user') then
        raise exception using errcode = 'LL007',
            message = pg_catalog.format('by must be caller, model, day, class or end_user, got %L',
                                        pg_catalog.left(coalesce(usage_report.by, 'null'), 40)),
            hint = 'Example: select * from public.usage_report(by => ''model'');';
    end if;
    if period_start >= period_end then
        raise exception using errcode = 'LL007',
            message = 'since must be before until',
            detail = pg_catalog.format('since %s, until %s', period_start, period_end),
            hint = 'Pass since earlier than until, or leave until null for now.';
    end if;
    return query
    with events as (
        select * from google_ai_internal.usage_events(period_start, period_end)
    ),

    bucketed as (
        select
            google_ai_internal.usage_bucket(
                usage_report.by, v.caller, v.model, v.at, v.detail_kept, v.end_user_hash
            ) as bucket,
            v.*
        from events as v
    ),

    reasons as (
        select g.bucket, pg_catalog.jsonb_object_agg(g.reason, g.n order by g.reason) as by_reason
        from (
            select b.bucket, coalesce(b.reason, 'unknown') as reason, sum(b.n_refusals) as n
            from bucketed as b
            where b.n_refusals > 0
            group by 1, 2
        ) as g
        group by g.bucket
    )

    select
        b.bucket,
        sum(b.n_requests)::bigint,
        sum(b.n_committed)::bigint,
        sum(b.n_input)::bigint,
        sum(b.n_output)::bigint,
        sum(b.n_refusals)::bigint,
        coalesce(rs.by_reason, '{}'::jsonb),
        sum(b.n_429s)::bigint,
        percentile_disc(0.5) within group (order by b.waited_ms)
            filter (where b.n_requests > 0 and b.detail_kept),
        percentile_disc(0.95) within group (order by b.waited_ms)
            filter (where b.n_requests > 0 and b.detail_kept),
        sum(b.n_fallbacks)::bigint,
        coalesce(sum(b.n_requests) filter (where not b.detail_kept), 0)::bigint
    from bucketed as b
    left join reasons as rs on rs.bucket = b.bucket
    group by b.bucket, rs.by_reason
    order by b.bucket;
end;
$$;

comment on function public.usage_report(timestamptz, timestamptz, text) is
'Requests, input/output tokens, refusals by reason, Google 429s, waits p50/p95 and fallbacks over a period, per caller, model, UTC day, caller class or end user (ledger, folded refusals, audit records and day roll-ups).';

revoke all on function public.usage_report(timestamptz, timestamptz, text)
from public, anon, authenticated;
grant execute on function public.usage_report(timestamptz, timestamptz, text) to service_role;
