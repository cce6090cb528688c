-- A WAIT that never starves a transaction pooler: the waiter queue becomes
-- rows (tickets) instead of an advisory lock held for the whole wait, so a
-- waiter keeps its place between short calls, and only the head of a queue
-- sits in the database while capacity frees.
--
-- Why not the advisory lock any more: a transaction pooler (Supavisor,
-- PgBouncer in transaction mode) gives every client a server connection for
-- one transaction only. A lock that lives as long as the wait pins one of the
-- pool's few connections per waiter; 24 waiters behind a pool of 8 made an
-- unrelated `select 1` wait 49 s (p95). Advisory locks, LISTEN/NOTIFY and
-- backend pids do not survive from one pooled transaction to the next, so a
-- place in line must be a committed row, and its owner's liveness a
-- timestamp the owner refreshes each time it calls again.
--
-- LOCK ORDER of a WAIT with a ticket (extends 20261124000400's):
--   1. the caller's own ticket row (FOR UPDATE, for the whole call: "its
--      owner is in the database now");
--   2. the ticket row just ahead of it, only to wait for that call to end,
--      inside a subtransaction that is rolled back at once, and never while
--      holding a window row;
--   3. one google_ai_quota_state row at a time, through reserve_round (its
--      own subtransactions), never across a pg_sleep.
-- Sweeping expired tickets skips locked rows, so it never waits on a caller.

alter table public.google_ai_settings
add column wait_slice_ms integer not null default 2000
check (wait_slice_ms between 100 and 60000),
add column wait_ticket_grace_ms integer not null default 1000
check (wait_ticket_grace_ms between 100 and 60000);

comment on column public.google_ai_settings.wait_slice_ms is
'Longest time one WAIT call of acquire() stays in the database (it then returns and the caller calls again).';
comment on column public.google_ai_settings.wait_ticket_grace_ms is
'How late a waiter may call back before its place in line expires.';

-- One row per caller that waits in line. seq is the FIFO order of a queue
-- (model, key set); due_at is when the owner was told to call back, and the
-- ticket stops holding its place at alive_until (due_at + one slice + grace:
-- a slice because the owner's own call may last that long while others still
-- see the row as it was committed before the call).
create table google_ai_internal.wait_tickets (
    id uuid primary key,
    seq bigint generated always as identity,
    model text not null,
    key_set text not null,
    tokens integer not null check (tokens >= 0),
    caller text,
    request_id text,
    created_at timestamptz not null,
    due_at timestamptz not null,
    turn_at timestamptz not null,
    alive_until timestamptz not null,
    rounds integer not null default 0
);

create index wait_tickets_queue_idx on google_ai_internal.wait_tickets (model, key_set, seq);
create index wait_tickets_alive_idx on google_ai_internal.wait_tickets (alive_until);

comment on table google_ai_internal.wait_tickets is
'Places in the WAIT queues of acquire(): FIFO per (model, key set) by seq, alive until alive_until.';

alter table google_ai_internal.wait_tickets enable row level security;
revoke all on table google_ai_internal.wait_tickets from public, anon, authenticated, service_role;
revoke all on sequence google_ai_internal.wait_tickets_seq_seq
from public, anon, authenticated, service_role;

/*
 * queue_key_set: the key-set half of a waiter queue's identity. Callers that
 * pass the same aliases (in any order, with repeats) share a queue; null
 * (every active key) is its own queue. Hashed so that a long alias list
 * still fits an index entry.
 *
 * Parameters: p_key_aliases, acquire's key_aliases.
 * Returns 32 hex digits. Raises nothing.
 * Example: select google_ai_internal.queue_key_set(array['b1', 'a1']);
 */
create function google_ai_internal.queue_key_set(p_key_aliases text [])
returns text
language sql
immutable
set search_path = ''
as $$
    select pg_catalog.md5(coalesce(pg_catalog.array_to_string(array(
        select distinct a from pg_catalog.unnest(p_key_aliases) as a order by a
    ), ','), '*'))
$$;

/*
 * turn_estimate: the earliest moment a waiter with `p_ahead` requests
 * (`p_ahead_tokens` tokens) ahead of it in line could be granted, read from
 * the ledger without locks: its slot is the (p_ahead + 1)-th request slot to
 * free across the candidate groups (a slot used again frees a window later), no sooner than the group's TPM has room
 * for the tokens ahead (an even share per group) plus its own, nor before a
 * cooldown or a spent day ends. A release can only make it sooner, which
 * the head of the queue catches; other queues on the same groups can make it
 * later, which the waiter finds out when it calls back.
 *
 * Parameters: the model, its candidates (acquire's order), the requests and
 * tokens ahead, the waiter's own tokens, the settings.
 * Returns a timestamptz on google_ai_internal.clock(). Raises nothing.
 * Example: select google_ai_internal.turn_estimate(m, cands, 3, 3600, 1200, cfg);
 */
create function google_ai_internal.turn_estimate(
    p_model public.google_ai_model_limits,
    p_cands google_ai_internal.candidate [],
    p_ahead integer,
    p_ahead_tokens bigint,
    p_tokens integer,
    p_cfg public.google_ai_settings
)
returns timestamptz
language plpgsql
stable
set search_path = ''
set plan_cache_mode = force_generic_plan
as $$
declare
    hold interval := pg_catalog.make_interval(
        secs => (p_cfg.window_ms + p_cfg.window_guard_ms) / 1000.0
    );
    at_now timestamptz := google_ai_internal.clock();
    cand google_ai_internal.candidate;
    tried text [] := '{}';
    groups integer;
    slots timestamptz [] := '{}';
    group_slots timestamptz [];
    floor_at timestamptz;
    used_requests bigint;
    used_tokens bigint;
    need bigint;
    tokens_at timestamptz;
    free_now integer;
    st public.google_ai_quota_state;
begin
    select count(distinct c.quota_group) into groups from pg_catalog.unnest(p_cands) as c;
    if groups = 0 then
        return at_now;
    end if;
    foreach cand in array p_cands loop
        continue when cand.quota_group = any(tried);
        tried := tried || cand.quota_group;
        select coalesce(sum(r.counted_requests), 0), coalesce(sum(r.counted_tokens), 0)
        into used_requests, used_tokens
        from public.google_ai_reservations as r
        where
            r.quota_group = cand.quota_group and r.model = p_model.model
            and r.granted_at > at_now - hold;
        select s.* into st
        from public.google_ai_quota_state as s
        where s.quota_group = cand.quota_group and s.model = p_model.model;

        floor_at := greatest(at_now, st.cooldown_until);
        if
            cand.rpd is not null
            and st.rpd_day = (at_now at time zone p_cfg.rpd_time_zone)::date
            and st.day_requests + 1 > cand.rpd
        then
            floor_at := greatest(
                floor_at, google_ai_internal.next_day_start(at_now, p_cfg.rpd_time_zone)
            );
        end if;
        need := used_tokens + p_ahead_tokens / groups + p_tokens - cand.tpm;
        if need > 0 then
            select w.granted_at + hold into tokens_at
            from (
                select
                    r.granted_at,
                    sum(r.counted_tokens) over (order by r.granted_at, r.id) as freed
                from public.google_ai_reservations as r
                where
                    r.quota_group = cand.quota_group and r.model = p_model.model
                    and r.granted_at > at_now - hold and r.counted_tokens > 0
            ) as w
            where w.freed >= need
            order by w.granted_at
            limit 1;
            floor_at := greatest(floor_at, coalesce(tokens_at, at_now + hold));
        end if;

        free_now := least(
            greatest(coalesce(cand.rpm - used_requests, p_ahead + 1), 0), p_ahead + 1
        )::integer;
        group_slots := pg_catalog.array_fill(floor_at, array[free_now]);
        if free_now < p_ahead + 1 then
            -- The k-th oldest grant in the window frees the k-th slot ...
            group_slots := group_slots || array(
                select greatest(r.granted_at + hold, floor_at)
                from public.google_ai_reservations as r
                where
                    r.quota_group = cand.quota_group and r.model = p_model.model
                    and r.granted_at > at_now - hold and r.counted_requests > 0
                order by r.granted_at
                offset greatest(used_requests - cand.rpm, 0)
                limit p_ahead + 1 - free_now
            );
            -- ... and each slot serves again a whole window after it is used.
            while pg_catalog.cardinality(group_slots) < p_ahead + 1 loop
                group_slots := group_slots || (
                    group_slots[pg_catalog.cardinality(group_slots) + 1 - cand.rpm] + hold
                );
            end loop;
        end if;
        slots := slots || group_slots;
    end loop;
    return coalesce(
        (select s from pg_catalog.unnest(slots) as s order by s offset p_ahead limit 1),
        at_now + hold
    );
end;
$$;

revoke all on function google_ai_internal.queue_key_set(text []) from public, anon, authenticated;
revoke all on function google_ai_internal.turn_estimate(
    public.google_ai_model_limits, google_ai_internal.candidate [], integer, bigint, integer,
    public.google_ai_settings
) from public, anon, authenticated;
