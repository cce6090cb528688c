-- The operator's end-user RPCs: `llm-limits end-users list|limit|block|
-- unblock`. The operator knows a person by their raw id ('tg:123456');
-- these take it and keep only its keyed hash (end_user_hash), and show a
-- person by their hash's label (end_user_label), as reports do. Each change
-- is a google_ai_end_users row, audited as config_changed by its trigger.

/*
 * named_end_user: the hash of the person an operator names: their raw id,
 * which must be given and valid.
 *
 * Parameters: p_end_user, the raw id.
 * Returns the end_user_hash. Raises: LL007 null, empty or longer than 200
 * characters.
 * Example: select google_ai_internal.named_end_user('tg:123456');
 */
create or replace function google_ai_internal.named_end_user(p_end_user text)
returns bytea
language plpgsql
stable
set search_path = ''
as $$
begin
    if p_end_user is null then
        raise exception using errcode = 'LL007', message = 'end_user must not be null',
            hint = 'Pass the id the bot passes as end_user, such as tg:123456.';
    end if;
    perform google_ai_internal.check_end_user(p_end_user);
    return google_ai_internal.end_user_hash(p_end_user);
end;
$$;

revoke all on function google_ai_internal.named_end_user(text) from public, anon, authenticated;

/*
 * set_end_user_rule: write one person's row: their limits (p_rpm, p_rpd;
 * null: the class's) when p_limits, their block when p_blocked is not null,
 * their notes when given.
 *
 * Parameters: p_end_user (the raw id), p_limits, p_rpm, p_rpd, p_blocked,
 * p_notes.
 * Returns the row as it is now. Raises: LL007 bad end_user, negative
 * limits or notes longer than 500 characters.
 * Example: select * from google_ai_internal.set_end_user_rule('tg:1', true, 10, null, null, null);
 */
create or replace function google_ai_internal.set_end_user_rule(
    p_end_user text,
    p_limits boolean,
    p_rpm integer,
    p_rpd integer,
    p_blocked boolean,
    p_notes text
)
returns public.google_ai_end_users
language plpgsql
volatile
set search_path = ''
as $$
declare
    saved public.google_ai_end_users;
    hash bytea := google_ai_internal.named_end_user(p_end_user);
begin
    if p_rpm < 0 or p_rpd < 0 then
        raise exception using errcode = 'LL007', message = 'rpm and rpd must not be negative',
            detail = pg_catalog.format('rpm %s, rpd %s', p_rpm, p_rpd),
            hint = 'Pass a number of grants, 0 to allow none, or null for the class''s.';
    end if;
    perform google_ai_internal.check_text('notes', p_notes, 500);
    insert into public.google_ai_end_users as e (end_user_hash, rpm, rpd, blocked, notes)
    values (hash, p_rpm, p_rpd, coalesce(p_blocked, false), p_notes)
    on conflict (end_user_hash) do update set
        rpm = case when p_limits then excluded.rpm else e.rpm end,
        rpd = case when p_limits then excluded.rpd else e.rpd end,
        blocked = coalesce(p_blocked, e.blocked),
        notes = coalesce(excluded.notes, e.notes)
    returning e.* into saved;
    return saved;
end;
$$;

revoke all on function google_ai_internal.set_end_user_rule(
    text, boolean, integer, integer, boolean, text
) from public, anon, authenticated;

/*
 * limit_end_user: give one end user their own limits: grants a minute
 * (over the exact sliding window) and a Pacific day, across models, in
 * place of their caller class's end_user_rpm and end_user_rpd. Null keeps
 * the class's; 0 allows none.
 *
 * Parameters: end_user (the raw id the bot passes), rpm, rpd, notes.
 * Returns the person's label (the first 8 hex digits of their hash, as
 * reports show them). Raises: LL007 bad end_user, negative limits, notes
 * too long.
 * Example: select public.limit_end_user('tg:123456', rpm => 20, rpd => 1000);
 */
create or replace function public.limit_end_user(
    end_user text, rpm integer default null, rpd integer default null, notes text default null
)
returns text
language sql
volatile
security definer
set search_path = ''
as $$
    select google_ai_internal.end_user_label(r.end_user_hash)
    from google_ai_internal.set_end_user_rule(
        limit_end_user.end_user, true, limit_end_user.rpm, limit_end_user.rpd, null,
        limit_end_user.notes
    ) as r
$$;

comment on function public.limit_end_user(text, integer, integer, text) is
'Give one end user (raw id; only its keyed hash is kept) their own grants a minute and a Pacific day, across models, in place of their class''s (null: the class''s; 0: none). Returns their label. Audited.';
revoke all on function public.limit_end_user(text, integer, integer, text)
from public, anon, authenticated;
grant execute on function public.limit_end_user(text, integer, integer, text) to service_role;

/*
 * block_end_user: refuse one end user every call (end_user_limit, no
 * retry_after_ms) until unblock_end_user, at no cost to the pool.
 *
 * Parameters: end_user (the raw id), notes (why).
 * Returns whether they were not blocked before. Raises: LL007 bad end_user
 * or notes too long.
 * Example: select public.block_end_user('tg:123456', 'spam');
 */
create or replace function public.block_end_user(end_user text, notes text default null)
returns boolean
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    was_blocked boolean;
begin
    select e.blocked into was_blocked from public.google_ai_end_users as e
    where e.end_user_hash = google_ai_internal.named_end_user(block_end_user.end_user);
    perform google_ai_internal.set_end_user_rule(
        block_end_user.end_user, false, null, null, true, block_end_user.notes
    );
    return not coalesce(was_blocked, false);
end;
$$;

comment on function public.block_end_user(text, text) is
'Refuse one end user (raw id) every call, reason end_user_limit without retry_after_ms, until unblock_end_user. Returns whether they were not blocked before. Audited.';
revoke all on function public.block_end_user(text, text) from public, anon, authenticated;
grant execute on function public.block_end_user(text, text) to service_role;

/*
 * unblock_end_user: serve a blocked end user again, under their limits.
 *
 * Parameters: end_user (the raw id).
 * Returns whether they were blocked. Raises: LL007 bad end_user.
 * Example: select public.unblock_end_user('tg:123456');
 */
create or replace function public.unblock_end_user(end_user text)
returns boolean
language plpgsql
volatile
security definer
set search_path = ''
as $$
begin
    update public.google_ai_end_users as e set blocked = false
    where e.end_user_hash = google_ai_internal.named_end_user(unblock_end_user.end_user) and e.blocked;
    return found;
end;
$$;

comment on function public.unblock_end_user(text) is
'Serve a blocked end user (raw id) again, under their limits. Returns whether they were blocked. Audited.';
revoke all on function public.unblock_end_user(text) from public, anon, authenticated;
grant execute on function public.unblock_end_user(text) to service_role;

/*
 * end_user_label: how reports, the audit log and end_users() show a person
 * an operator names by their raw id (the first 8 hex digits of its keyed
 * hash), to find them there.
 *
 * Parameters: end_user (the raw id).
 * Returns the label. Raises: LL007 bad end_user.
 * Example: select public.end_user_label('tg:123456');
 */
create or replace function public.end_user_label(end_user text)
returns text
language sql
stable
security definer
set search_path = ''
as $$
    select google_ai_internal.end_user_label(
        google_ai_internal.named_end_user(end_user_label.end_user)
    )
$$;

comment on function public.end_user_label(text) is
'The label (first 8 hex digits of the keyed hash) under which reports and the audit log show the end user of this raw id.';
revoke all on function public.end_user_label(text) from public, anon, authenticated;
grant execute on function public.end_user_label(text) to service_role;

/*
 * end_users: the end users an operator may want to see: everyone with a
 * row of their own (limits, block) and everyone granted or waiting today,
 * by their label, with their own limits, today's grants (Pacific day),
 * grants in the sliding window, and their tickets in line now.
 *
 * Returns one row per person, blocked first, then by grants today.
 * Raises nothing.
 * Example: select * from public.end_users() limit 20;
 */
create or replace function public.end_users()
returns table (
    end_user text,
    rpm integer,
    rpd integer,
    blocked boolean,
    notes text,
    requests_today integer,
    requests_in_window bigint,
    waiting bigint
)
language sql
stable
security definer
set search_path = ''
as $$
    with
    cfg as (select s.* from google_ai_internal.settings() as s),
    now_ as (select google_ai_internal.clock() as at_now),
    people as (
        select e.end_user_hash from public.google_ai_end_users as e
        union
        select u.end_user_hash from public.google_ai_end_user_usage as u, cfg as c, now_ as n
        where u.day = (n.at_now at time zone c.rpd_time_zone)::date
        union
        select t.end_user_hash from google_ai_internal.wait_tickets as t, now_ as n
        where t.end_user_hash is not null and t.alive_until > n.at_now
    )
    select
        google_ai_internal.end_user_label(p.end_user_hash), e.rpm, e.rpd,
        coalesce(e.blocked, false), e.notes, coalesce(u.requests, 0),
        (select count(*) from public.google_ai_reservations as r
         where
             r.end_user_hash = p.end_user_hash and r.counted_requests > 0
             and r.granted_at > n.at_now - google_ai_internal.window_hold(c)),
        (select count(*) from google_ai_internal.wait_tickets as t
         where t.end_user_hash = p.end_user_hash and t.alive_until > n.at_now)
    from people as p
    cross join cfg as c
    cross join now_ as n
    left join public.google_ai_end_users as e on e.end_user_hash = p.end_user_hash
    left join public.google_ai_end_user_usage as u
        on u.end_user_hash = p.end_user_hash and u.day = (n.at_now at time zone c.rpd_time_zone)::date
    order by 4 desc, 6 desc, 1
$$;

comment on function public.end_users() is
'End users with their own row or granted or waiting today: label (hash prefix), own rpm/rpd (null: the class''s), blocked, notes, grants today and in the window, tickets in line.';
revoke all on function public.end_users() from public, anon, authenticated;
grant execute on function public.end_users() to service_role;
