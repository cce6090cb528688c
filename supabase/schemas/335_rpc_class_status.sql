-- class_status: use and waiters per caller class, for `llm-limits status`.

/*
 * class_status: per caller class and model, the requests and input tokens in
 * the sliding window (every quota group together), the requests of the
 * current quota day, the waiters in line and the end users among them (the
 * people waiting: each person once, however many tickets they hold), and
 * the class's priority, reserves and per-person limits. Classes with no use
 * and no waiter are listed once, with a null
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
    may_fall_back boolean,
    people_waiting bigint,
    end_user_rpm integer,
    end_user_rpd integer
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
        select
            coalesce(t.caller_class, 'default') as caller_class, t.model, count(*) as waiters,
            count(distinct t.end_user_hash) as people
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
            coalesce(w.waiters, 0) as waiters,
            coalesce(w.people, 0) as people
        from used as u
        full join waiting as w on w.caller_class = u.caller_class and w.model = u.model
    )
    select
        k.name, k.priority, m.model, coalesce(m.rpm_used, 0), coalesce(m.tpm_used, 0),
        coalesce(m.rpd_used, 0), coalesce(m.waiters, 0), k.rpm_reserve, k.tpm_reserve,
        k.rpd_reserve, k.may_fall_back, coalesce(m.people, 0), k.end_user_rpm, k.end_user_rpd
    from public.google_ai_caller_classes as k
    left join per_model as m on m.caller_class = k.name
    order by k.priority, k.name, m.model
$$;

comment on function public.class_status() is
'Per caller class and model: requests and input tokens in the sliding window, requests today, waiters and the people (end users) among them, and the class''s priority, reserves and per-person limits.';

revoke all on function public.class_status() from public, anon, authenticated;
grant execute on function public.class_status() to service_role;
