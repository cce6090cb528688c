-- The end users of a bot: acquire's end_user is one more dimension of the
-- same decision. A person is known by a keyed hash of their id only; their
-- class (the caller's) gives them a limit per minute, over the same exact
-- rolling log as the pool's windows, and per Pacific day; their own row
-- (google_ai_end_users) raises, lowers or blocks them. A person past a limit
-- is answered before any pool slot is taken. Lock order: a person's day row
-- comes after the window rows (220_window_protocol.sql, step 3b).

/*
 * check_end_user: require an end user id to be 1 to 200 characters (null
 * means no end user).
 *
 * Parameters: p_end_user, the raw id.
 * Returns nothing. Raises: LL007 when it is empty or longer than 200
 * characters.
 * Example: perform google_ai_internal.check_end_user('tg:123456');
 */
create or replace function google_ai_internal.check_end_user(p_end_user text)
returns void
language plpgsql
immutable
set search_path = ''
as $$
begin
    if p_end_user is not null and pg_catalog.length(p_end_user) not between 1 and 200 then
        raise exception using errcode = 'LL007',
            message = 'end_user must be 1 to 200 characters',
            detail = pg_catalog.format('got %s characters', pg_catalog.length(p_end_user)),
            hint = 'Pass an opaque id of the person, such as tg:123456, or null for none.';
    end if;
end;
$$;

revoke all on function google_ai_internal.check_end_user(text) from public, anon, authenticated;

/*
 * end_user_hash: the keyed hash that stands for an end user in every table:
 * HMAC-SHA256 of the id (UTF-8) under the install's key
 * (google_ai_internal.end_user_hash_key), its first 16 bytes.
 *
 * Parameters: p_end_user, the raw id (checked by check_end_user).
 * Returns 16 bytes, or null for null. Raises nothing.
 * Example: select google_ai_internal.end_user_hash('tg:123456');
 */
create or replace function google_ai_internal.end_user_hash(p_end_user text)
returns bytea
language plpgsql
stable
set search_path = ''
as $$
begin
    return (
        select pg_catalog.substr(extensions.hmac(
            pg_catalog.convert_to(p_end_user, 'UTF8'), k.hash_key, 'sha256'
        ), 1, 16)
        from google_ai_internal.end_user_hash_key as k
        where p_end_user is not null
    );
end;
$$;

revoke all on function google_ai_internal.end_user_hash(text) from public, anon, authenticated;

/*
 * end_user_label: how reports, the audit log and the CLI show an end user:
 * the first 8 hex digits of their hash.
 *
 * Parameters: p_hash, an end_user_hash. Returns text, or null for null.
 * Raises nothing.
 * Example: select google_ai_internal.end_user_label(google_ai_internal.end_user_hash('tg:1'));
 */
create or replace function google_ai_internal.end_user_label(p_hash bytea)
returns text
language sql
immutable
set search_path = ''
as $$
    select pg_catalog.encode(pg_catalog.substr(p_hash, 1, 4), 'hex')
$$;

revoke all on function google_ai_internal.end_user_label(bytea) from public, anon, authenticated;

/*
 * end_user_policy: a caller's policy for one of its end users: the person's
 * hash, and their own row's limits where it sets them (else the class's
 * defaults, which caller_policy read) and block.
 *
 * Parameters: p_policy, the caller's (caller_policy); p_end_user, the raw
 * id (null: no end user, p_policy unchanged).
 * Returns the policy. Raises nothing.
 * Example: pol := google_ai_internal.end_user_policy(google_ai_internal.caller_policy('bot'),
 *                                                  'tg:123456');
 */
create or replace function google_ai_internal.end_user_policy(
    p_policy google_ai_internal.caller_policy, p_end_user text
)
returns google_ai_internal.caller_policy
language plpgsql
stable
set search_path = ''
as $$
declare
    pol google_ai_internal.caller_policy := p_policy;
    own public.google_ai_end_users;
begin
    if p_end_user is null then
        return pol;
    end if;
    pol.end_user_hash := google_ai_internal.end_user_hash(p_end_user);
    select e.* into own from public.google_ai_end_users as e where e.end_user_hash = pol.end_user_hash;
    pol.end_user_rpm := coalesce(own.rpm, pol.end_user_rpm);
    pol.end_user_rpd := coalesce(own.rpd, pol.end_user_rpd);
    pol.end_user_blocked := coalesce(own.blocked, false);
    return pol;
end;
$$;

revoke all on function google_ai_internal.end_user_policy(google_ai_internal.caller_policy, text)
from public, anon, authenticated;

/*
 * end_user_free_at: when an end user may next be granted, or null when they
 * may be now (and for a call without an end user): 'infinity' while they
 * are blocked; the next Pacific midnight once their day is spent; and when
 * their minute frees, by the pool's rule (slots_free_at): with n of their
 * grants counted in the window (window_hold) and a limit of rpm, the
 * (n - rpm + 1)-th oldest must leave it first. The latest of these binds.
 *
 * Parameters: p_policy (end_user_policy's), the settings, p_now, and
 * p_counted: whether this call's own grant is already in the ledger (then
 * it is not one more).
 * Returns a timestamptz or null. Raises nothing.
 * Example: select google_ai_internal.end_user_free_at(pol, cfg, now(), false);
 */
create or replace function google_ai_internal.end_user_free_at(
    p_policy google_ai_internal.caller_policy,
    p_cfg public.google_ai_settings,
    p_now timestamptz,
    p_counted boolean
)
returns timestamptz
language plpgsql
stable
set search_path = ''
set plan_cache_mode = force_generic_plan
as $$
declare
    hold interval := google_ai_internal.window_hold(p_cfg);
    spent integer;
    others bigint;
    free_at timestamptz;
begin
    if p_policy.end_user_hash is null then
        return null;
    elsif p_policy.end_user_blocked then
        return 'infinity';
    end if;
    if p_policy.end_user_rpd is not null then
        select u.requests into spent from public.google_ai_end_user_usage as u
        where
            u.end_user_hash = p_policy.end_user_hash
            and u.day = (p_now at time zone p_cfg.rpd_time_zone)::date;
        if coalesce(spent, 0) + 1 > p_policy.end_user_rpd then
            free_at := google_ai_internal.next_day_start(p_now, p_cfg.rpd_time_zone);
        end if;
    end if;
    if p_policy.end_user_rpm is not null then
        select count(*) - p_counted::integer into others from public.google_ai_reservations as r
        where
            r.end_user_hash = p_policy.end_user_hash and r.granted_at > p_now - hold
            and r.counted_requests > 0;
        if others + 1 > p_policy.end_user_rpm then
            free_at := greatest(free_at, coalesce((
                select r.granted_at + hold from public.google_ai_reservations as r
                where
                    r.end_user_hash = p_policy.end_user_hash and r.granted_at > p_now - hold
                    and r.counted_requests > 0
                order by r.granted_at
                offset others - p_policy.end_user_rpm limit 1
            ), p_now + hold));
        end if;
    end if;
    return free_at;
end;
$$;

revoke all on function google_ai_internal.end_user_free_at(
    google_ai_internal.caller_policy, public.google_ai_settings, timestamptz, boolean
) from public, anon, authenticated;

/*
 * spend_end_user: count a grant just made against its end user's limits,
 * in turn with the person's other grants: the person's day row is locked
 * (made if missing), then their limits are read again, so two processes
 * serving one person at once cannot both take the last slot. Fits: the day
 * row counts it. Does not fit: nothing is counted, and the caller gives the
 * grant back.
 *
 * Parameters: p_policy (end_user_policy's), the settings.
 * Returns whether the grant fits (true for a call without an end user).
 * Raises nothing.
 * Example: if not google_ai_internal.spend_end_user(pol, cfg) then ... end if;
 */
create or replace function google_ai_internal.spend_end_user(
    p_policy google_ai_internal.caller_policy, p_cfg public.google_ai_settings
)
returns boolean
language plpgsql
volatile
set search_path = ''
as $$
declare
    today date := (google_ai_internal.clock() at time zone p_cfg.rpd_time_zone)::date;
begin
    if p_policy.end_user_hash is null then
        return true;
    end if;
    insert into public.google_ai_end_user_usage as u (end_user_hash, day)
    values (p_policy.end_user_hash, today)
    on conflict (end_user_hash, day) do nothing;
    perform 1 from public.google_ai_end_user_usage as u
    where u.end_user_hash = p_policy.end_user_hash and u.day = today
    for update;
    -- A statement after the lock: the grants of whoever held it are seen.
    if google_ai_internal.end_user_free_at(
        p_policy, p_cfg, google_ai_internal.clock(), true
    ) is not null then
        return false;
    end if;
    update public.google_ai_end_user_usage as u
    set requests = u.requests + 1
    where u.end_user_hash = p_policy.end_user_hash and u.day = today;
    return true;
end;
$$;

revoke all on function google_ai_internal.spend_end_user(
    google_ai_internal.caller_policy, public.google_ai_settings
) from public, anon, authenticated;

/*
 * end_user_wait: the answer to an end user who may not be granted before
 * p_free_at (end_user_free_at). A WAIT whose max_wait_ms reaches that
 * moment is told 'queued' with retry_after_ms until then (queue_position
 * null: the person waits out of line), and calls back with the ticket; any
 * other call is refused end_user_limit with that truthful retry_after_ms
 * (null while the person is blocked). Either way the person gives up their
 * place in line, so that the line does not wait for them; they take a new
 * one when they may go.
 *
 * Parameters: p_free_at; p_model, the model asked for; p_waiting (a WAIT
 * that may still wait), p_max_wait_ms, p_ticket and p_started (acquire's).
 * Returns the verdict. Raises nothing.
 * Example: verdict := google_ai_internal.end_user_wait(now() + interval '5 s', m, true, 30000,
 *                         null, clock_timestamp());
 */
create or replace function google_ai_internal.end_user_wait(
    p_free_at timestamptz,
    p_model public.google_ai_model_limits,
    p_waiting boolean,
    p_max_wait_ms integer,
    p_ticket uuid,
    p_started timestamptz
)
returns public.acquire_result
language plpgsql
volatile
set search_path = ''
as $$
declare
    verdict public.acquire_result;
begin
    verdict.granted := false;
    verdict.model := coalesce(p_model.api_model, p_model.model);
    verdict.reason := 'end_user_limit';
    if p_free_at < 'infinity' then
        verdict.retry_after_ms := greatest(1, pg_catalog.ceil(
            extract(epoch from p_free_at - google_ai_internal.clock()) * 1000
        ))::integer;
    end if;
    verdict.waited_ms := pg_catalog.round(
        extract(epoch from pg_catalog.clock_timestamp() - p_started) * 1000
    )::integer;
    delete from google_ai_internal.wait_tickets as t where t.id = p_ticket;
    if p_waiting and verdict.retry_after_ms <= p_max_wait_ms then
        verdict.reason := 'queued';
        verdict.ticket := coalesce(p_ticket, pg_catalog.gen_random_uuid());
        verdict.expected_wait_ms := verdict.retry_after_ms;
    end if;
    return verdict;
end;
$$;

revoke all on function google_ai_internal.end_user_wait(
    timestamptz, public.google_ai_model_limits, boolean, integer, uuid, timestamptz
) from public, anon, authenticated;
