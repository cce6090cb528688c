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
-- waiting. Written from supabase/schemas (000, 060, 090, 140, 152, 155, 157,
-- 159, 175, 220, 230, 235, 237, 240, 260, 270, 280, 300).
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
 * ticket order. No call stays in the database longer than wait_slice_ms, so
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
