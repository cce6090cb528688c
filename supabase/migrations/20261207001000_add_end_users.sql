-- The bot's end users: acquire's end_user (a person on the caller's side,
-- such as 'tg:123456') is one more dimension of the same decision. The
-- database keeps only a keyed hash of it (HMAC-SHA256 under a key generated
-- here, at install). A caller's class limits each person per minute (over the
-- ledger's exact rolling window) and per Pacific day (interactive: 6 and
-- 300); a google_ai_end_users row raises, lowers or blocks one person. A
-- person past a limit is answered before any pool slot is taken (reason
-- end_user_limit, or 'queued' until their next slot for a WAIT that reaches
-- it). In a WAIT queue the people of one class take turns. Operators: the
-- end-user RPCs; usage_report by end_user; class_status counts the people
-- waiting; run_maintenance deletes the people's day rows with the ledger's
-- days. Written from supabase/schemas (000, 060, 090, 140, 152, 155, 157,
-- 159, 175, 220, 230, 235, 237, 240, 260, 270, 280, 300, 335, 345, 385,
-- 400).
--
-- Lock order: that of 220_window_protocol.sql, with the person's day row
-- after the window rows (step 3b).

-- pgcrypto's hmac() keys the hash that stands for a bot's end user
-- (237_end_user_limits.sql). Supabase installs it in `extensions`; a plain
-- Postgres gets it here.
create extension if not exists pgcrypto with schema extensions;

-- Per-person defaults of a caller class.
alter table public.google_ai_caller_classes
add column end_user_rpm integer check (end_user_rpm >= 0),
add column end_user_rpd integer check (end_user_rpd >= 0);

comment on column public.google_ai_caller_classes.end_user_rpm is
'Grants a minute (over the exact sliding window) one end user of a caller of this class may have, across models; a google_ai_end_users row raises, lowers or blocks one person (null: no limit).';
comment on column public.google_ai_caller_classes.end_user_rpd is
'Grants a Pacific day one end user of a caller of this class may have, across models (null: no limit).';

-- A bot's people share about 30 messages a minute: one person gets 6 of them.
update public.google_ai_caller_classes set end_user_rpm = 6, end_user_rpd = 300
where name = 'interactive' and end_user_rpm is null and end_user_rpd is null;

-- The key of the keyed hash that stands for a bot's end user
-- (google_ai_internal.end_user_hash): the database never holds a person's raw
-- id, only HMAC-SHA256(id, this key), cut to 16 bytes. Generated once, at
-- install, and readable by no role but the owner: a copy of the ledger or
-- the audit log without it cannot be turned back into Telegram ids by
-- hashing every candidate. Kept apart from google_ai_settings, whose audit
-- trail copies whole rows. Replacing it makes every person a new one
-- (their per-person rows no longer match).

create table google_ai_internal.end_user_hash_key (
    id boolean primary key default true check (id),
    hash_key bytea not null default extensions.gen_random_bytes(32)
    check (pg_catalog.length(hash_key) >= 32),
    created_at timestamptz not null default now()
);

comment on table google_ai_internal.end_user_hash_key is
'The secret key of the end-user hash (one row, generated at install; no role but the owner reads it).';

-- The row is part of the schema: end_user_hash() reads it.
insert into google_ai_internal.end_user_hash_key (id) values (true)
on conflict (id) do nothing;

alter table google_ai_internal.end_user_hash_key enable row level security;
revoke all on table google_ai_internal.end_user_hash_key
from public, anon, authenticated, service_role;

-- Per-person rules for the end users of a bot (acquire's end_user), by the
-- keyed hash of their id (google_ai_internal.end_user_hash): a row raises or
-- lowers one person's limits below or above their caller class's defaults
-- (end_user_rpm, end_user_rpd; null here: the class's), or blocks them.
-- Operators edit it through public.limit_end_user, block_end_user and
-- unblock_end_user, which take the raw id; every change is audited as
-- config_changed (the audit shows the hash's prefix only).

create table public.google_ai_end_users (
    end_user_hash bytea primary key check (pg_catalog.length(end_user_hash) = 16),
    rpm integer check (rpm >= 0),
    rpd integer check (rpd >= 0),
    blocked boolean not null default false,
    notes text check (pg_catalog.length(notes) <= 500),
    updated_at timestamptz not null default now()
);

comment on table public.google_ai_end_users is
'Per-person limits and blocks for a bot''s end users, by the keyed hash of their id: rpm, rpd (null: the caller class''s end_user_rpm, end_user_rpd), blocked.';

alter table public.google_ai_end_users enable row level security;
revoke all on table public.google_ai_end_users from public, anon, authenticated, service_role;
grant select on table public.google_ai_end_users to service_role;

-- What each end user has been granted on a Pacific day, across models: one
-- row per person and day, written at a grant (an update of the day's row,
-- which stays on its page), so the daily limit is one read and concurrent
-- grants of one person are counted in turn (the row's lock, after the
-- window row's: 220_window_protocol.sql). The minute's limit reads the
-- ledger itself. run_maintenance deletes the rows of days older than the
-- ledger retention.

create table public.google_ai_end_user_usage (
    end_user_hash bytea not null,
    day date not null,
    requests integer not null default 0 check (requests >= 0),
    primary key (end_user_hash, day)
)
-- Room for each grant's new row version on the same page.
with (fillfactor = 70);

comment on table public.google_ai_end_user_usage is
'Grants per end user (keyed hash) and Pacific day, across models: one row per person and day, kept for ledger_retention.';

alter table public.google_ai_end_user_usage enable row level security;
revoke all on table public.google_ai_end_user_usage from public, anon, authenticated, service_role;
grant select on table public.google_ai_end_user_usage to service_role;

-- Who each grant, refusal and place in line was for.
alter table public.google_ai_reservations add column end_user_hash bytea;
alter table public.google_ai_refusals add column end_user_hash bytea;
alter table google_ai_internal.wait_tickets add column end_user_hash bytea;

-- A person's grants in the window, and their last grant (their turn in line).
create index google_ai_reservations_end_user_idx
on public.google_ai_reservations (end_user_hash, granted_at)
where end_user_hash is not null;

comment on column public.google_ai_reservations.end_user_hash is
'The keyed hash of the end user the grant served (acquire''s end_user; google_ai_internal.end_user_hash), or null.';

comment on column public.google_ai_refusals.end_user_hash is
'The keyed hash of the end user refused (acquire''s end_user), or null; part of the fold.';

comment on column google_ai_internal.wait_tickets.end_user_hash is
'The keyed hash of the end user waiting (acquire''s end_user), or null: within a class, people take turns (line_ahead).';

-- A caller's policy carries its class's per-person limits, and the person.
alter type google_ai_internal.caller_policy
add attribute end_user_rpm integer,
add attribute end_user_rpd integer,
add attribute end_user_hash bytea,
add attribute end_user_blocked boolean;

-- New arguments: the end user (check_acquire_args, acquire) and their hash
-- (fold_refusal, record_acquire_verdict).
drop function google_ai_internal.fold_refusal(
    bigint, public.acquire_result, text, text, text [], public.google_ai_settings, timestamptz
);
drop function google_ai_internal.record_acquire_verdict(
    public.acquire_result, text, integer, text, integer, integer, text, text, text []
);
drop function google_ai_internal.check_acquire_args(
    text, integer, text, integer, text [], text, text
);
drop function public.acquire(text, integer, text, integer, text [], text, text, uuid);

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
language sql
stable
set search_path = ''
as $$
    select pg_catalog.substr(extensions.hmac(
        pg_catalog.convert_to(p_end_user, 'UTF8'), k.hash_key, 'sha256'
    ), 1, 16)
    from google_ai_internal.end_user_hash_key as k
    where p_end_user is not null
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
        granted_at, rpd_day, lease_until, caller, request_id, waited_ms, caller_class,
        end_user_hash
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
        p_policy.caller_class, p_policy.end_user_hash
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
    st := google_ai_internal.outage_probe(st, p_now, p_cfg);
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
        alive_until, deadline, priority, caller_class, end_user_hash
    ) values (
        p_ticket, p_model, p_key_set, p_tokens, p_caller, p_request_id, at_now, at_now, at_now,
        at_now + pg_catalog.make_interval(
            secs => (p_cfg.wait_slice_ms + p_cfg.wait_ticket_grace_ms) / 1000.0
        ),
        pg_catalog.clock_timestamp() + pg_catalog.make_interval(secs => p_max_wait_ms / 1000.0),
        p_policy.priority, p_policy.caller_class, p_policy.end_user_hash
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

/*
 * masked_end_user: a row as a config_changed record shows it: an end
 * user's hash (google_ai_end_users) as its label (end_user_label), never
 * whole; any other row unchanged.
 *
 * Parameters: p_row, the row as jsonb (null passes through).
 * Returns the row. Raises nothing.
 * Example: select google_ai_internal.masked_end_user(to_jsonb(e)) from public.google_ai_end_users as e;
 */
create or replace function google_ai_internal.masked_end_user(p_row jsonb)
returns jsonb
language sql
immutable
set search_path = ''
as $$
    select case
        when p_row ? 'end_user_hash' then (p_row - 'end_user_hash') || pg_catalog.jsonb_build_object(
            'end_user', google_ai_internal.end_user_label((p_row ->> 'end_user_hash')::bytea)
        )
        else p_row
    end
$$;

revoke all on function google_ai_internal.masked_end_user(jsonb) from public, anon, authenticated;

/*
 * audit_config_change: trigger that audits configuration changes as
 * config_changed records with old and new values, whoever made them. The
 * actor recorded is the caller's role, not the definer. An end user shows
 * as their hash's label (masked_end_user).
 * Trigger function; example: update public.google_ai_settings set lease_ms = 300000;
 */
create or replace function google_ai_internal.audit_config_change()
returns trigger
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    old_row jsonb := case
        when tg_op <> 'INSERT' then google_ai_internal.masked_end_user(pg_catalog.to_jsonb(old))
    end;
    new_row jsonb := case
        when tg_op <> 'DELETE' then google_ai_internal.masked_end_user(pg_catalog.to_jsonb(new))
    end;
    row_now jsonb := coalesce(new_row, old_row);
begin
    if tg_op = 'UPDATE' and old_row = new_row then
        return new;
    end if;
    insert into public.google_ai_audit_records (ts, event, key_alias, model, actor, details)
    values (
        google_ai_internal.clock(),
        'config_changed',
        row_now ->> 'key_alias',
        row_now ->> 'model',
        case
            when pg_catalog.current_setting('role') = 'none' then session_user
            else pg_catalog.current_setting('role')
        end,
        pg_catalog.jsonb_build_object(
            'table', tg_table_name,
            'op', pg_catalog.lower(tg_op),
            'old', old_row,
            'new', new_row
        )
    );
    return coalesce(new, old);
end;
$$;

comment on function google_ai_internal.audit_config_change() is
'Trigger: audits configuration changes as config_changed rows with old and new values.';
revoke all on function google_ai_internal.audit_config_change() from public, anon, authenticated;

create trigger google_ai_end_users_audit
after insert or update or delete on public.google_ai_end_users
for each row execute function google_ai_internal.audit_config_change();

create trigger google_ai_end_users_touch
before update on public.google_ai_end_users
for each row execute function google_ai_internal.touch_updated_at();

-- The audit log shows the person of a grant and of a refusal by label.
create or replace view public.google_ai_audit_log with (security_invoker = true) as
select a.id, a.ts, a.event, a.key_alias, a.model, a.reservation_id, a.actor, a.details
from public.google_ai_audit_records as a
union all
select
    f.id,
    f.first_at as ts,
    'refused' as event,
    f.key_alias,
    f.model,
    null::uuid as reservation_id,
    null::text as actor,
    pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
        'count', f.refusals,
        'first_at', f.first_at,
        'last_at', f.last_at,
        'reason', f.reason,
        'retry_after_ms', f.retry_after_ms,
        'tokens', f.tokens,
        'mode', f.mode,
        'max_wait_ms', f.max_wait_ms,
        'waited_ms', f.waited_ms,
        'rounds', f.rounds,
        'caller', f.caller,
        'request_id', f.request_id,
        'key_set', f.key_set,
        -- end_user_label's rule, inline: the view runs as its reader.
        'end_user', pg_catalog.encode(pg_catalog.substr(f.end_user_hash, 1, 4), 'hex')
    )) as details
from public.google_ai_refusals as f
union all
select
    coalesce(
        (r.details #>> '{granted,audit_id}')::bigint,
        ('x' || pg_catalog.substr(pg_catalog.md5(r.id::text), 1, 15))::bit(60)::bigint
    ) as id,
    coalesce((r.details #>> '{granted,audit_ts}')::timestamptz, r.granted_at) as ts,
    'granted' as event,
    r.key_alias,
    r.model,
    r.id as reservation_id,
    r.details #>> '{granted,actor}' as actor,
    pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
        'tokens', r.estimated_tokens,
        'waited_ms', r.waited_ms,
        'quota_group', r.quota_group,
        'caller', r.caller,
        'request_id', r.request_id,
        'end_user', pg_catalog.encode(pg_catalog.substr(r.end_user_hash, 1, 4), 'hex')
    )) || coalesce(r.details -> 'granted', '{}'::jsonb) - '{audit_id,audit_ts,actor}'::text [] as details
from public.google_ai_reservations as r
union all
select
    coalesce(
        (r.details -> r.status ->> 'audit_id')::bigint,
        -('x' || pg_catalog.substr(pg_catalog.md5(r.id::text), 1, 15))::bit(60)::bigint
    ) as id,
    coalesce((r.details -> r.status ->> 'audit_ts')::timestamptz, r.settled_at) as ts,
    r.status as event,
    r.key_alias,
    r.model,
    r.id as reservation_id,
    r.details -> r.status ->> 'actor' as actor,
    case
        when r.status = 'committed' then pg_catalog.jsonb_build_object(
            'estimated_tokens', r.estimated_tokens,
            'prompt_tokens', r.actual_tokens,
            'completion_tokens', r.completion_tokens,
            'late', r.settled_at > r.lease_until
        )
        else pg_catalog.jsonb_build_object(
            'sent', r.counted_requests > 0,
            'refunded', r.counted_requests = 0
        )
    end || coalesce(r.details -> r.status, '{}'::jsonb) - '{audit_id,audit_ts,actor}'::text [] as details
from public.google_ai_reservations as r
where r.status in ('committed', 'released');

/*
 * line_ahead: who is ahead of a waiter in its queue: the live tickets of
 * the same model and key set that come before it and still hold their
 * place (their owner is in a call, or is less than the grace late). The one
 * definition of "ahead". Tickets come by rank (queue_rank), then by turn:
 * within a rank the end users take turns (a person's k-th ticket comes
 * after every other person's (k-1)-th; tickets without an end user are one
 * more person), the person served least recently first (their last grant,
 * on any model; never served: first), then by ticket order (seq). So one
 * person's many tickets delay another person's one by one slot at most.
 * Without end users the order is rank, then seq.
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
    with line as (
        select
            t.id, t.tokens, t.seq, t.due_at, t.end_user_hash,
            google_ai_internal.queue_rank(t, p_starving, p_now, p_aging_ms) as rank
        from google_ai_internal.wait_tickets as t
        where
            t.model = p_me.model and t.key_set = p_me.key_set
            and (t.alive_until > p_now or t.id = p_me.id)
    ),

    placed as (
        select
            l.*,
            pg_catalog.row_number() over (partition by l.rank, l.end_user_hash order by l.seq) as turn,
            coalesce((
                select max(r.granted_at) from public.google_ai_reservations as r
                where r.end_user_hash = l.end_user_hash
            ), '-infinity') as served_at
        from line as l
    )

    select
        count(*)::integer,
        coalesce(sum(x.tokens), 0)::bigint,
        (pg_catalog.array_agg(x.id order by x.rank desc, x.turn desc, x.served_at desc, x.seq desc))[1],
        (pg_catalog.array_agg(x.id order by x.rank, x.turn, x.served_at, x.seq))[1]
    from placed as x
    inner join placed as me on me.id = p_me.id
    where
        x.id <> me.id
        and (x.rank, x.turn, x.served_at, x.seq) < (me.rank, me.turn, me.served_at, me.seq)
        and (x.due_at + p_grace > p_now or google_ai_internal.ticket_in_call(x.id))
$$;

revoke all on function google_ai_internal.line_ahead(
    google_ai_internal.wait_tickets, text [], timestamptz, interval, integer
) from public, anon, authenticated;

/*
 * wait_in_line: one call of a WAIT that holds a ticket (a place in the
 * queue of its model and key set, kept between calls). The queue is served
 * by rank (queue_rank: class priority; a starving class's old waiters
 * first), then by the turns of the end users, then ticket order; "ahead" is
 * line_ahead.
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
 * request_id, max_wait_ms (the first call's fixes the ticket's deadline; a
 * later call's can only bring it closer), the settings, when the call
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
    line record;
    step record;
    remaining_ms double precision;
begin
    placed := google_ai_internal.take_place(
        p_ticket, p_model.model, google_ai_internal.queue_key_set(p_key_aliases), p_tokens,
        p_caller, p_request_id, p_max_wait_ms, p_cfg, p_policy
    );
    me := placed.ticket;
    select * into deadline, slice_end, yield_at
    from google_ai_internal.call_bounds(me, p_started, p_max_wait_ms, p_yield_after_ms, p_cfg);
    rounds := me.rounds;
    loop
        rounds := rounds + 1;
        line := google_ai_internal.look_at_line(me, p_model.model, p_key_aliases, p_tokens, p_cfg);
        remaining_ms := extract(epoch from deadline - pg_catalog.clock_timestamp()) * 1000;
        if line.nearest is null then
            step := google_ai_internal.head_try(
                p_model, line.cands, p_tokens, p_caller, p_request_id, p_cfg, p_policy,
                me.created_at, remaining_ms, not placed.fresh, slice_end
            );
        else
            verdict := google_ai_internal.try_backfill(
                line.head, line.cands, p_model, p_tokens, p_caller, p_request_id, p_cfg, p_policy,
                me.created_at
            );
            exit when verdict.granted;
            step := google_ai_internal.turn_behind(
                p_model, line.cands, p_tokens, p_policy.paced, p_cfg, line.nearest, line.ahead,
                line.ahead_tokens, remaining_ms, not placed.fresh, slice_end
            );
            if not step.done then
                -- Due, and the one ahead is in a call: wait for it to end.
                perform google_ai_internal.wait_for_ticket(line.nearest, slice_end);
            end if;
        end if;
        verdict := step.verdict;
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

-- usage_report by end_user: its events carry the person (a new column), its
-- buckets take them (a new argument); class_status counts the people
-- waiting (new columns).
drop function google_ai_internal.usage_events(timestamptz, timestamptz);
drop function google_ai_internal.usage_bucket(text, text, text, timestamptz, boolean);
drop function public.class_status();

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

/*
 * run_maintenance: one maintenance pass; safe to run concurrently with itself
 * (one run wins, the others return {"status": "skipped"} at once) and with
 * live traffic (it never deletes a ledger row inside a live window).
 *
 *   1. leases: reservations still `reserved` after lease_until become
 *      `expired` (audited); they stay counted in their windows.
 *   2. ledger: settled rows older than ledger_retention are added into
 *      google_ai_usage_counters per key, model and minute/day (minute in
 *      UTC, day in rpd_time_zone) and their grant and settlement events into
 *      google_ai_event_counts, then deleted.
 *   3. audit: records and folded refusals older than audit_retention are
 *      counted into google_ai_event_counts, then deleted; maintenance log rows
 *      of that age are deleted.
 *   4. rollups: per-minute counters older than rollup_retention are deleted
 *      (the per-day counters keep their totals); end users' day rows
 *      (google_ai_end_user_usage) of days the ledger no longer holds are
 *      deleted (their grants are rolled up with the ledger's).
 *
 * Writes one google_ai_maintenance_log row and returns it as jsonb.
 * Raises nothing of its own.
 * Example: select public.run_maintenance();
 */
create or replace function public.run_maintenance()
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    cfg public.google_ai_settings := google_ai_internal.settings();
    started timestamptz := google_ai_internal.clock();
    ledger_cutoff timestamptz;
    audit_cutoff timestamptz;
    rollup_cutoff timestamptz;
    expired_count integer;
    rolled_count integer;
    trimmed record;
    minute_count integer;
    log_count integer;
    state_count integer;
    person_count integer;
begin
    if not (
        select pg_catalog.pg_try_advisory_xact_lock(k.class_id, k.obj_id)
        from google_ai_internal.maintenance_lock_key() as k
    ) then
        return pg_catalog.jsonb_build_object('status', 'skipped',
                                             'reason', 'another run_maintenance() is in progress');
    end if;
    -- Never delete a row that a window could still count.
    ledger_cutoff := started - greatest(
        cfg.ledger_retention, google_ai_internal.window_hold(cfg), interval '2 days'
    );
    audit_cutoff := started - cfg.audit_retention;
    rollup_cutoff := started - greatest(cfg.rollup_retention, cfg.ledger_retention);

    expired_count := google_ai_internal.expire_leases(started);
    rolled_count := google_ai_internal.roll_up_ledger(ledger_cutoff, cfg, started);
    -- A window row idle for longer than the retention may point at ledger
    -- rows just deleted; drop it, the next acquire rebuilds it from the ledger.
    delete from public.google_ai_quota_state as s
    where s.swept_to < ledger_cutoff and (s.cooldown_until is null or s.cooldown_until < started);
    get diagnostics state_count = row_count;
    trimmed := google_ai_internal.trim_audit(audit_cutoff);
    delete from public.google_ai_usage_counters as c
    where c.bucket_kind = 'minute' and c.bucket_start < rollup_cutoff;
    get diagnostics minute_count = row_count;
    delete from public.google_ai_end_user_usage as u
    where u.day < (ledger_cutoff at time zone cfg.rpd_time_zone)::date;
    get diagnostics person_count = row_count;
    delete from public.google_ai_maintenance_log as m where m.started_at < audit_cutoff;
    get diagnostics log_count = row_count;

    return google_ai_internal.log_maintenance(
        started,
        rolled_count + trimmed.records + trimmed.refusals + minute_count + log_count + state_count
        + person_count,
        pg_catalog.jsonb_build_object(
            'leases_expired', expired_count,
            'ledger_rows_rolled_up', rolled_count,
            'audit_rows_deleted', trimmed.records,
            'refusal_rows_deleted', trimmed.refusals,
            'minute_rollups_deleted', minute_count,
            'maintenance_rows_deleted', log_count,
            'window_rows_dropped', state_count,
            'end_user_days_deleted', person_count,
            'ledger_cutoff', ledger_cutoff,
            'audit_cutoff', audit_cutoff,
            'rollup_cutoff', rollup_cutoff
        )
    );
end;
$$;

comment on function public.run_maintenance() is
'Expire leases, roll old ledger rows, audit records and folded refusals up into google_ai_usage_counters and google_ai_event_counts, trim per-minute rollups; one google_ai_maintenance_log row per run. Concurrent runs: one wins, the rest return {"status":"skipped"}.';
revoke all on function public.run_maintenance() from public, anon, authenticated;
grant execute on function public.run_maintenance() to service_role;
