-- The WAIT lines of acquire(). A WAIT never starves a transaction pooler:
-- the waiter queue is rows (tickets, 140_table_wait_tickets.sql) instead of
-- an advisory lock held for the whole wait, so a waiter keeps its place
-- between short calls, and only the head of a queue sits in the database
-- while capacity frees. Every WAIT holds a ticket (acquire makes one when the
-- caller passes none). Lock order: 220_window_protocol.sql, step 1.

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
create or replace function google_ai_internal.queue_key_set(p_key_aliases text [])
returns text
language plpgsql
immutable
set search_path = ''
as $$
begin
    return pg_catalog.md5(coalesce(pg_catalog.array_to_string(array(
        select distinct a from pg_catalog.unnest(p_key_aliases) as a order by a
    ), ','), '*'));
end;
$$;

revoke all on function google_ai_internal.queue_key_set(text []) from public, anon, authenticated;

/*
 * queue_waiters: callers waiting on this model right now (all groups and key
 * sets): every live ticket.
 *
 * Parameters: p_model, a google_ai_model_limits.model name.
 * Returns the count (0 when nobody waits). Raises nothing.
 * Example: select google_ai_internal.queue_waiters('gemma-3-27b');
 */
create or replace function google_ai_internal.queue_waiters(p_model text)
returns integer
language sql
stable
set search_path = ''
as $$
    select count(*)::integer
    from google_ai_internal.wait_tickets as t
    where t.model = p_model and t.alive_until > google_ai_internal.clock()
$$;

revoke all on function google_ai_internal.queue_waiters(text) from public, anon, authenticated;

/*
 * ticket_in_call: whether the owner of a ticket is inside an acquire call
 * right now. Each call holds its own ticket row locked; a lock attempt that
 * cannot get the row says so. The attempt runs in a subtransaction that is
 * rolled back at once, so nothing stays locked.
 *
 * Parameters: p_ticket, a wait_tickets id.
 * Returns true while its owner's call runs. Raises nothing.
 * Example: select google_ai_internal.ticket_in_call('b9e1c6c2-4f64-4a4e-9d0c-3c8f0f3f6a11');
 */
create or replace function google_ai_internal.ticket_in_call(p_ticket uuid)
returns boolean
language plpgsql
volatile
set search_path = ''
as $$
begin
    perform 1 from google_ai_internal.wait_tickets as t where t.id = p_ticket for update nowait;
    raise exception using errcode = 'LL999';
exception
    when sqlstate 'LL999' then return false;  -- rolled back: the row is not ours
    when lock_not_available then return true;
end;
$$;

revoke all on function google_ai_internal.ticket_in_call(uuid) from public, anon, authenticated;

/*
 * higher_class_grants: how many requests the classes above p_priority were
 * granted on one group and model within the hold: the share of the slots
 * that free which they can be expected to take again.
 *
 * Parameters: p_group, p_model (a limits row name), p_priority, p_now, p_hold.
 * Returns a count. Raises nothing.
 * Example: select google_ai_internal.higher_class_grants('free-1', 'gemma-3-27b', 90, now(),
 *              interval '61 s');
 */
create or replace function google_ai_internal.higher_class_grants(
    p_group text,
    p_model text,
    p_priority integer,
    p_now timestamptz,
    p_hold interval
)
returns integer
language plpgsql
stable
set search_path = ''
as $$
begin
    return (
        select count(*)::integer
        from public.google_ai_reservations as r
        join public.google_ai_caller_classes as c on c.name = r.caller_class
        where r.quota_group = p_group and r.model = p_model and r.granted_at > p_now - p_hold
            and r.counted_requests = 1 and c.priority < p_priority
    );
end;
$$;

revoke all on function google_ai_internal.higher_class_grants(
    text, text, integer, timestamptz, interval
) from public, anon, authenticated;

/*
 * paced_slots: the first p_wanted of a paced waiter's slots, as try_reserve
 * hands them out: of p_slots (every slot that frees, the classes above
 * taking their share: the k-th of ours is the ceil(k * n / p_wanted)-th),
 * one per emission interval (hold / rpm) from the window's paced_until,
 * as pacing_free_at applies it.
 *
 * Parameters: p_slots (in time order), p_wanted, p_paced_until, p_rpm,
 * p_now, p_hold.
 * Returns p_wanted slots in time order. Raises nothing.
 * Example: select google_ai_internal.paced_slots(array[now(), now()], 1, now(), 30, now(),
 *              interval '61 s');
 */
create or replace function google_ai_internal.paced_slots(
    p_slots timestamptz [],
    p_wanted integer,
    p_paced_until timestamptz,
    p_rpm integer,
    p_now timestamptz,
    p_hold interval
)
returns timestamptz []
language plpgsql
immutable
set search_path = ''
as $$
begin
    return array(
        select greatest(
            p_slots[pg_catalog.ceil(k * pg_catalog.cardinality(p_slots)::numeric / p_wanted)::integer],
            greatest(p_now, p_paced_until - p_hold / p_rpm) + (k - 1) * (p_hold / p_rpm)
        )
        from pg_catalog.generate_series(1, p_wanted) as k
        order by k
    );
end;
$$;

revoke all on function google_ai_internal.paced_slots(
    timestamptz [], integer, timestamptz, integer, timestamptz, interval
) from public, anon, authenticated;

/*
 * group_slots: the next request slots of one candidate group for a waiter
 * with p_ahead requests ahead of it: the (p_ahead + 1) earliest moments a
 * request could be granted there, read from the ledger without locks. A
 * free slot serves now; a used one frees when its grant leaves the window,
 * and each slot serves again a whole window after it is used. None comes
 * before a cooldown or a spent day ends, nor before the group's TPM has
 * room for p_need_tokens more. A paced waiter (a class above has members)
 * gets its slots at the pace try_reserve keeps (paced_slots), and is told
 * (told) when it can expect them: the classes above take their share of
 * the slots that free, as many as they took in the last window
 * (higher_class_grants). Its turn (turns) leaves that share out, so that it
 * never looks again later than a slot could be its.
 *
 * Parameters: p_cand (the group's first key, with its limits), p_model (a
 * limits row name), p_ahead, p_need_tokens (the tokens ahead that fall to
 * this group, plus the waiter's own), p_policy (the waiter's), the
 * settings, p_now, p_hold.
 * Returns the slots in time order: the earliest (turns) and the expected
 * ones (told). Raises nothing.
 * Example: select * from google_ai_internal.group_slots(cand, 'gemma-3-27b', 3, 4800, pol, cfg, now(),
 *              interval '61 s');
 */
create or replace function google_ai_internal.group_slots(
    p_cand google_ai_internal.candidate,
    p_model text,
    p_ahead integer,
    p_need_tokens bigint,
    p_policy google_ai_internal.caller_policy,
    p_cfg public.google_ai_settings,
    p_now timestamptz,
    p_hold interval,
    out turns timestamptz [],
    out told timestamptz []
)
language plpgsql
stable
set search_path = ''
set plan_cache_mode = force_generic_plan
as $$
declare
    used record;
    st public.google_ai_quota_state;
    paced boolean := coalesce(p_policy.paced, false) and p_cand.rpm > 0;
    n integer := p_ahead + 1;
    floor_at timestamptz;
    free_now integer;
    slots timestamptz [];
begin
    select coalesce(sum(r.counted_requests), 0) as requests, coalesce(sum(r.counted_tokens), 0) as tokens
    into used
    from public.google_ai_reservations as r
    where r.quota_group = p_cand.quota_group and r.model = p_model and r.granted_at > p_now - p_hold;
    select s.* into st
    from public.google_ai_quota_state as s
    where s.quota_group = p_cand.quota_group and s.model = p_model;
    if paced then
        n := pg_catalog.ceil(n * p_cand.rpm::numeric / greatest(1, p_cand.rpm - google_ai_internal.higher_class_grants(
            p_cand.quota_group, p_model, p_policy.priority, p_now, p_hold
        )))::integer;
    end if;

    floor_at := greatest(p_now, google_ai_internal.cooldown_free_at(st, p_now, p_cfg));
    if p_cand.rpd is not null and st.rpd_day = (p_now at time zone p_cfg.rpd_time_zone)::date
        and st.day_requests + 1 > p_cand.rpd then
        floor_at := greatest(floor_at, google_ai_internal.next_day_start(p_now, p_cfg.rpd_time_zone));
    end if;
    if used.tokens + p_need_tokens > p_cand.tpm then
        floor_at := greatest(floor_at, google_ai_internal.tokens_free_at(
            p_cand.quota_group, p_model, p_now - p_hold, p_hold,
            used.tokens + p_need_tokens - p_cand.tpm, null
        ));
    end if;

    free_now := least(greatest(coalesce(p_cand.rpm - used.requests, n), 0), n);
    slots := pg_catalog.array_fill(floor_at, array[free_now]);
    if free_now < n then
        slots := slots || array(
            select greatest(f, floor_at)
            from google_ai_internal.slots_free_at(
                p_cand.quota_group, p_model, p_now - p_hold, p_hold, used.requests - p_cand.rpm,
                n - free_now, null
            ) as f
        );
        while pg_catalog.cardinality(slots) < n loop
            slots := slots || (slots[pg_catalog.cardinality(slots) + 1 - p_cand.rpm] + p_hold);
        end loop;
    end if;
    turns := slots[1:p_ahead + 1];
    told := slots;
    if paced then
        turns := google_ai_internal.paced_slots(turns, p_ahead + 1, st.paced_until, p_cand.rpm, p_now, p_hold);
        told := google_ai_internal.paced_slots(told, p_ahead + 1, st.paced_until, p_cand.rpm, p_now, p_hold);
    end if;
end;
$$;

revoke all on function google_ai_internal.group_slots(
    google_ai_internal.candidate, text, integer, bigint, google_ai_internal.caller_policy,
    public.google_ai_settings, timestamptz, interval
) from public, anon, authenticated;

/*
 * turn_estimate: the earliest moment a waiter with the tickets p_ahead_ids
 * ahead of it in line could be granted (turn): with n of them still in
 * line, its slot is the (n + 1)-th to free across the candidate groups
 * (group_slots; their tokens shared evenly between the groups); and when it
 * can expect it (told), the classes above taking their share. Those still
 * in line are counted here, in the snapshot the ledger is read in: one
 * granted since the caller looked at the line is gone from it and in the
 * ledger, and is counted once, as a used slot. A release can only make the
 * turn sooner, which the head of the queue catches; other queues on the
 * same groups can make it later, which the waiter finds out when it calls
 * back.
 *
 * Parameters: the model, its candidates (acquire's order), the tickets
 * ahead (line_ahead), the waiter's own tokens, its policy, the settings.
 * Returns timestamptz values on google_ai_internal.clock(). Raises nothing.
 * Example: select * from google_ai_internal.turn_estimate(m, cands, line.ahead_ids, 1200, pol,
 *              cfg);
 */
create or replace function google_ai_internal.turn_estimate(
    p_model public.google_ai_model_limits,
    p_cands google_ai_internal.candidate [],
    p_ahead_ids uuid [],
    p_tokens integer,
    p_policy google_ai_internal.caller_policy,
    p_cfg public.google_ai_settings,
    out turn timestamptz,
    out told timestamptz
)
language plpgsql
stable
set search_path = ''
as $$
declare
    at_now timestamptz := google_ai_internal.clock();
    hold interval := google_ai_internal.window_hold(p_cfg);
    ahead integer;
    ahead_tokens bigint;
    groups integer;
    cand google_ai_internal.candidate;
    tried text [] := '{}';
    slots record;
    turns timestamptz [] := '{}';
    tolds timestamptz [] := '{}';
begin
    select count(*)::integer, coalesce(sum(t.tokens), 0)::bigint into ahead, ahead_tokens
    from google_ai_internal.wait_tickets as t
    where t.id = any(p_ahead_ids);
    select count(distinct c.quota_group) into groups from pg_catalog.unnest(p_cands) as c;
    if groups = 0 then
        turn := at_now;
        told := at_now;
        return;
    end if;
    foreach cand in array p_cands loop
        continue when cand.quota_group = any(tried);  -- each group once, on its best key
        tried := tried || cand.quota_group;
        slots := google_ai_internal.group_slots(
            cand, p_model.model, ahead, ahead_tokens / groups + p_tokens, p_policy, p_cfg,
            at_now, hold
        );
        turns := turns || slots.turns;
        tolds := tolds || slots.told;
    end loop;
    turn := coalesce(
        (select s from pg_catalog.unnest(turns) as s order by s offset ahead limit 1), at_now + hold
    );
    told := coalesce(
        (select s from pg_catalog.unnest(tolds) as s order by s offset ahead limit 1), at_now + hold
    );
end;
$$;

revoke all on function google_ai_internal.turn_estimate(
    public.google_ai_model_limits, google_ai_internal.candidate [], uuid [], integer,
    google_ai_internal.caller_policy, public.google_ai_settings
) from public, anon, authenticated;

/*
 * starving_classes: the classes of a queue that aging lifts to the top: a
 * class is starving when it has a waiter that has waited aging_ms and the
 * class was granted nothing on the model's candidate groups within aging_ms.
 * So aging only acts when the classes above take the whole limit; under an
 * ordinary load every class is granted now and then, and the classes keep
 * their order. A starving class is served one grant per aging_ms.
 *
 * Parameters: p_model and p_key_set (the queue), p_groups (its candidate
 * quota groups), p_now, p_aging_ms (google_ai_settings.aging_ms).
 * Returns the class names (empty when none starves). Raises nothing.
 * Example: select google_ai_internal.starving_classes('gemma-3-27b', md5('*'),
 *              array['free-1'], now(), 60000);
 */
create or replace function google_ai_internal.starving_classes(
    p_model text, p_key_set text, p_groups text [], p_now timestamptz, p_aging_ms integer
)
returns text []
language plpgsql
stable
set search_path = ''
as $$
begin
    return (
        select coalesce(pg_catalog.array_agg(distinct t.caller_class), '{}')
        from google_ai_internal.wait_tickets as t
        where
            t.model = p_model and t.key_set = p_key_set and t.alive_until > p_now
            and t.created_at <= p_now - pg_catalog.make_interval(secs => p_aging_ms / 1000.0)
            and not exists (
                select from public.google_ai_reservations as r
                where
                    r.quota_group = any(p_groups) and r.model = p_model
                    and r.granted_at > p_now - pg_catalog.make_interval(secs => p_aging_ms / 1000.0)
                    and r.caller_class = t.caller_class
            )
    );
end;
$$;

revoke all on function google_ai_internal.starving_classes(text, text, text [], timestamptz, integer)
from public, anon, authenticated;

/*
 * queue_rank: where a waiter stands in its queue: its class priority, or 0
 * (the top) once it has waited aging_ms in a starving class
 * (starving_classes). Ties go by ticket order (seq).
 *
 * Parameters: p_ticket, the waiter; p_starving, the queue's starving
 * classes; p_now; p_aging_ms.
 * Returns the rank (lower is served first). Raises nothing.
 * Example: select google_ai_internal.queue_rank(t, '{batch}', now(), 60000)
 *          from google_ai_internal.wait_tickets as t;
 */
create or replace function google_ai_internal.queue_rank(
    p_ticket google_ai_internal.wait_tickets,
    p_starving text [],
    p_now timestamptz,
    p_aging_ms integer
)
returns integer
language plpgsql
immutable
set search_path = ''
as $$
begin
    return case
        when p_ticket.caller_class = any(p_starving)
            and p_ticket.created_at <= p_now - pg_catalog.make_interval(secs => p_aging_ms / 1000.0)
            then 0
        else p_ticket.priority
    end;
end;
$$;

revoke all on function google_ai_internal.queue_rank(
    google_ai_internal.wait_tickets, text [], timestamptz, integer
) from public, anon, authenticated;

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
 * Returns how many are ahead, their tokens and tickets, the nearest one and
 * the head of the line (both null when the waiter is the head). Raises
 * nothing.
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
    out ahead_ids uuid [],
    out nearest uuid,
    out head uuid
)
language plpgsql
volatile
set search_path = ''
as $$
begin
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
        coalesce(pg_catalog.array_agg(x.id), '{}'),
        (pg_catalog.array_agg(x.id order by x.rank desc, x.turn desc, x.served_at desc, x.seq desc))[1],
        (pg_catalog.array_agg(x.id order by x.rank, x.turn, x.served_at, x.seq))[1]
    into ahead, ahead_tokens, ahead_ids, nearest, head
    from placed as x
    inner join placed as me on me.id = p_me.id
    where
        x.id <> me.id
        and (x.rank, x.turn, x.served_at, x.seq) < (me.rank, me.turn, me.served_at, me.seq)
        and (x.due_at + p_grace > p_now or google_ai_internal.ticket_in_call(x.id));
end;
$$;

revoke all on function google_ai_internal.line_ahead(
    google_ai_internal.wait_tickets, text [], timestamptz, interval, integer
) from public, anon, authenticated;

/*
 * backfill_group: where a waiter behind others may be served now without
 * delaying anyone ahead of it (backfill). Either a group has room now for
 * every request ahead and this one: when many slots free at once, the
 * waiters take them side by side instead of one after another. Or the head
 * waits for tokens in a group (its request does not fit the group's TPM
 * yet); the waiter's fits now, a request slot stays for the head, and the
 * waiter's tokens leave the window after every grant in it, so the exact log
 * says the head fits no later with them than without. A smaller request then
 * goes ahead instead of TPM idling; aging still bounds every wait (the head
 * keeps its place).
 *
 * Parameters: p_head, the head's ticket; p_ahead and p_ahead_tokens, the
 * requests and tokens ahead; p_tokens, the waiter's; the model's candidates
 * and name; the settings; p_now.
 * Returns the quota group to try, or null. Raises nothing.
 * Example: select google_ai_internal.backfill_group(head, 2, 3000, 1500, cands, 'gemma-3-27b',
 *              cfg, now());
 */
create or replace function google_ai_internal.backfill_group(
    p_head google_ai_internal.wait_tickets,
    p_ahead integer,
    p_ahead_tokens bigint,
    p_tokens integer,
    p_cands google_ai_internal.candidate [],
    p_model text,
    p_cfg public.google_ai_settings,
    p_now timestamptz
)
returns text
language plpgsql
stable
set search_path = ''
as $$
declare
    hold interval := google_ai_internal.window_hold(p_cfg);
    cand google_ai_internal.candidate;
    used record;
    head_needs bigint;
begin
    if p_head.id is null then
        return null;  -- the head was served meanwhile: the line has moved
    end if;
    foreach cand in array p_cands loop
        select coalesce(sum(r.counted_requests), 0) as requests, coalesce(sum(r.counted_tokens), 0) as tokens
        into used
        from public.google_ai_reservations as r
        where r.quota_group = cand.quota_group and r.model = p_model and r.granted_at > p_now - hold;
        if (cand.rpm is null or used.requests + p_ahead + 1 <= cand.rpm)
            and (cand.tpm is null or used.tokens + p_ahead_tokens + p_tokens <= cand.tpm) then
            return cand.quota_group;  -- room for everyone ahead, and for this one
        end if;
        continue when cand.tpm is null;
        head_needs := used.tokens + p_head.tokens - cand.tpm;
        continue when head_needs <= 0 or used.tokens + p_tokens > cand.tpm
            or used.requests + 2 > coalesce(cand.rpm, used.requests + 2);
        if google_ai_internal.tokens_free_at(
            cand.quota_group, p_model, p_now - hold, hold, head_needs + p_tokens, null
        ) <= google_ai_internal.tokens_free_at(
            cand.quota_group, p_model, p_now - hold, hold, head_needs, null
        ) then
            return cand.quota_group;
        end if;
    end loop;
    return null;
end;
$$;

revoke all on function google_ai_internal.backfill_group(
    google_ai_internal.wait_tickets, integer, bigint, integer, google_ai_internal.candidate [],
    text, public.google_ai_settings, timestamptz
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
 * wait_for_ticket: wait until the call that holds a ticket's row lock ends
 * (its owner is granted, or its slice is over), or until p_until. Row locks
 * end only with their (sub)transaction, so the lock is taken in a
 * subtransaction that this function rolls back at once by raising LL999 to
 * itself; the lock_timeout it sets is undone with it.
 *
 * Parameters: p_ticket, the one ahead; p_until, when to stop waiting.
 * Returns nothing. Raises nothing (LL999 and lock_not_available are caught).
 * Example: perform google_ai_internal.wait_for_ticket(pred.id, clock_timestamp() + interval '2 s');
 */
create or replace function google_ai_internal.wait_for_ticket(p_ticket uuid, p_until timestamptz)
returns void
language plpgsql
volatile
set search_path = ''
as $$
begin
    perform pg_catalog.set_config('lock_timeout', greatest(1, pg_catalog.ceil(
        extract(epoch from p_until - pg_catalog.clock_timestamp()) * 1000
    ))::text || 'ms', true);
    perform 1 from google_ai_internal.wait_tickets as t where t.id = p_ticket for update;
    raise exception using errcode = 'LL999';
exception
    when sqlstate 'LL999' or lock_not_available then null;
end;
$$;

revoke all on function google_ai_internal.wait_for_ticket(uuid, timestamptz)
from public, anon, authenticated;

/*
 * await_turn: a due waiter's wait inside its call: until the call of the one
 * ahead ends (when that one is in a call), or until the waiter's own turn if
 * that comes first, never past the end of its slice. When slots free a few
 * milliseconds apart, the window has room for both at the waiter's own turn
 * and serves them side by side (try_backfill), not one call after the other;
 * once its turn has come, only the call ahead is waited for.
 *
 * Parameters: p_pred, the one ahead's ticket; p_present, whether its owner
 * is in a call; p_turn_in, the time until the waiter's own turn (<= 0: it
 * has come); p_slice_end.
 * Returns nothing. Raises nothing.
 * Example: perform google_ai_internal.await_turn(pred.id, true, interval '3 ms',
 *              clock_timestamp() + interval '2 s');
 */
create or replace function google_ai_internal.await_turn(
    p_pred uuid, p_present boolean, p_turn_in interval, p_slice_end timestamptz
)
returns void
language plpgsql
volatile
set search_path = ''
as $$
declare
    until timestamptz := case
        when p_turn_in > interval '0' then
            least(p_slice_end, pg_catalog.clock_timestamp() + p_turn_in)
        else p_slice_end
    end;
begin
    if p_present then
        perform google_ai_internal.wait_for_ticket(p_pred, until);
    else
        perform pg_catalog.pg_sleep(
            greatest(0, extract(epoch from until - pg_catalog.clock_timestamp()))
        );
    end if;
end;
$$;

revoke all on function google_ai_internal.await_turn(uuid, boolean, interval, timestamptz)
from public, anon, authenticated;

/*
 * head_try: one try of the head of a queue (nobody live ahead of it), and
 * what follows: granted (or no key), refused for good (the deadline has
 * come, or a cooldown or a spent day outlasts it), told to call back
 * ('queued': at once when this call may not stay, or a recheck before a
 * cooldown or a day ends), or a short sleep in the database before the next
 * try (exactly when the window frees, or after wait_recheck_ms to catch a
 * release; no row lock is held: reserve_round rolled its try back).
 *
 * Parameters: the model row, its candidates, the tokens, caller, request_id,
 * settings and policy, when the wait began, the ms left until the deadline,
 * whether this call may stay (not the ticket's first call, slice not over),
 * and the end of its slice.
 * Returns the verdict, the expected turn and the hint to call back after
 * (while queued), and whether the call is done (false: look again).
 * Raises nothing.
 * Example: select * from google_ai_internal.head_try(m, cands, 100, 'bot', 'r1', cfg, pol,
 *              now(), 5000, true, clock_timestamp() + interval '2 s');
 */
create or replace function google_ai_internal.head_try(
    p_model public.google_ai_model_limits,
    p_cands google_ai_internal.candidate [],
    p_tokens integer,
    p_caller text,
    p_request_id text,
    p_cfg public.google_ai_settings,
    p_policy google_ai_internal.caller_policy,
    p_waiting_since timestamptz,
    p_remaining_ms double precision,
    p_may_stay boolean,
    p_slice_end timestamptz,
    out verdict public.acquire_result,
    out turn timestamptz,
    out hint_ms double precision,
    out done boolean
)
language plpgsql
volatile
set search_path = ''
as $$
begin
    done := true;
    verdict := google_ai_internal.reserve_round(
        p_model, p_cands, p_tokens, p_caller, p_request_id, p_cfg, true, p_policy,
        p_waiting_since
    );
    if verdict.granted or verdict.reason = 'no_key' then
        return;
    elsif p_remaining_ms <= 0 then
        verdict.reason := 'wait_timeout';
        return;
    elsif verdict.reason in ('rpd', 'cooldown') and verdict.retry_after_ms > p_remaining_ms then
        return;  -- nothing but time frees a cooldown or a day
    end if;
    turn := google_ai_internal.clock()
        + pg_catalog.make_interval(secs => verdict.retry_after_ms / 1000.0);
    if verdict.reason in ('rpd', 'cooldown') then
        hint_ms := verdict.retry_after_ms - p_cfg.wait_recheck_ms;
        verdict.reason := 'queued';
    elsif not p_may_stay or pg_catalog.clock_timestamp() >= p_slice_end then
        hint_ms := 0;
        verdict.reason := 'queued';
    else
        perform pg_catalog.pg_sleep(least(
            verdict.retry_after_ms, p_cfg.wait_recheck_ms, p_remaining_ms,
            extract(epoch from p_slice_end - pg_catalog.clock_timestamp()) * 1000
        ) / 1000.0);
        done := false;
    end if;
end;
$$;

revoke all on function google_ai_internal.head_try(
    public.google_ai_model_limits, google_ai_internal.candidate [], integer, text, text,
    public.google_ai_settings, google_ai_internal.caller_policy, timestamptz,
    double precision, boolean, timestamptz
) from public, anon, authenticated;

/*
 * turn_behind: when a waiter behind others (p_pred, the nearest one ahead;
 * p_ahead and p_ahead_tokens, all of them) could be served, and what it
 * does now: told to call back when its turn is expected, less one
 * wait_recheck_ms, so it sleeps without a connection; once due, wait in this
 * call (await_turn; done false: the caller looks again), or, when this call
 * may not stay (a ticket's first call commits its place by answering), told
 * to call back at once. It never sleeps past the moment the one ahead would
 * be found gone (one slice plus the grace while that one is in a call, its
 * due time plus the grace otherwise), and backs off by how late the one
 * ahead is when its own turn has come but the one ahead is not here.
 *
 * Parameters: the model row, its candidates, the tokens, the waiter's
 * policy, the settings, the one ahead's ticket id, the tickets ahead, the
 * ms left until the deadline, whether this call may stay, the end of its
 * slice.
 * Returns the verdict (queued or wait_timeout, retry_after_ms when the turn
 * can come, expected_wait_ms when it is expected), the turn, the hint and
 * whether the call is done.
 * Raises nothing.
 * Example: select * from google_ai_internal.turn_behind(m, cands, 100, pol, cfg, pred_id,
 *              line.ahead_ids, 5000, true, clock_timestamp() + interval '2 s');
 */
create or replace function google_ai_internal.turn_behind(
    p_model public.google_ai_model_limits,
    p_cands google_ai_internal.candidate [],
    p_tokens integer,
    p_policy google_ai_internal.caller_policy,
    p_cfg public.google_ai_settings,
    p_pred uuid,
    p_ahead_ids uuid [],
    p_remaining_ms double precision,
    p_may_stay boolean,
    p_slice_end timestamptz,
    out verdict public.acquire_result,
    out turn timestamptz,
    out hint_ms double precision,
    out done boolean
)
language plpgsql
volatile
set search_path = ''
as $$
declare
    at_now timestamptz := google_ai_internal.clock();
    grace interval := pg_catalog.make_interval(secs => p_cfg.wait_ticket_grace_ms / 1000.0);
    pred google_ai_internal.wait_tickets;
    present boolean;
    estimate record;
begin
    select t.* into pred from google_ai_internal.wait_tickets as t where t.id = p_pred;
    done := true;
    estimate := google_ai_internal.turn_estimate(
        p_model, p_cands, p_ahead_ids, p_tokens, p_policy, p_cfg
    );
    turn := greatest(estimate.turn, pred.turn_at);
    verdict.granted := false;
    verdict.model := coalesce(p_model.api_model, p_model.model);
    verdict.reason := case when p_remaining_ms <= 0 then 'wait_timeout' else 'queued' end;
    verdict.retry_after_ms := greatest(
        1, pg_catalog.ceil(extract(epoch from turn - at_now) * 1000)
    )::integer;
    verdict.expected_wait_ms := greatest(
        0, pg_catalog.ceil(extract(epoch from greatest(estimate.told, turn) - at_now) * 1000)
    )::integer;
    if p_remaining_ms <= 0 then
        return;
    end if;
    hint_ms := extract(epoch from turn - at_now) * 1000 - p_cfg.wait_recheck_ms;
    present := google_ai_internal.ticket_in_call(pred.id);
    if hint_ms <= 0 and (present or turn > at_now) then
        if p_may_stay and pg_catalog.clock_timestamp() < p_slice_end then
            done := false;
            perform google_ai_internal.await_turn(pred.id, present, turn - at_now, p_slice_end);
        else
            hint_ms := 0;  -- this answer commits its place: the next call waits in the database
        end if;
        return;
    end if;
    if hint_ms <= 0 and not present then
        hint_ms := greatest(
            p_cfg.wait_recheck_ms, pg_catalog.abs(extract(epoch from at_now - pred.due_at)) * 1000
        );
    end if;
    hint_ms := greatest(p_cfg.wait_recheck_ms, least(
        hint_ms,
        case
            when present then p_cfg.wait_slice_ms + p_cfg.wait_ticket_grace_ms
            else extract(epoch from pred.due_at + grace - at_now) * 1000
        end
    ));
end;
$$;

revoke all on function google_ai_internal.turn_behind(
    public.google_ai_model_limits, google_ai_internal.candidate [], integer,
    google_ai_internal.caller_policy, public.google_ai_settings, uuid, uuid [], double precision,
    boolean, timestamptz
) from public, anon, authenticated;

/*
 * look_at_line: a waiter's look at its queue: the candidates that could
 * serve its request now, and who is ahead of it (line_ahead, with the
 * queue's starving classes on those candidates' groups).
 *
 * Parameters: p_me, the waiter's ticket; p_model (a limits row name);
 * p_key_aliases; p_tokens; the settings.
 * Returns the candidates and line_ahead's answer. Raises nothing.
 * Example: select * from google_ai_internal.look_at_line(me, 'gemma-3-27b', null, 100, cfg);
 */
create or replace function google_ai_internal.look_at_line(
    p_me google_ai_internal.wait_tickets,
    p_model text,
    p_key_aliases text [],
    p_tokens integer,
    p_cfg public.google_ai_settings,
    out cands google_ai_internal.candidate [],
    out ahead integer,
    out ahead_tokens bigint,
    out ahead_ids uuid [],
    out nearest uuid,
    out head uuid
)
language plpgsql
volatile
set search_path = ''
as $$
declare
    at_now timestamptz := google_ai_internal.clock();
begin
    cands := array(
        select c from google_ai_internal.candidates(p_model, p_key_aliases, at_now, p_tokens) as c
    );
    select l.ahead, l.ahead_tokens, l.ahead_ids, l.nearest, l.head
    into ahead, ahead_tokens, ahead_ids, nearest, head
    from google_ai_internal.line_ahead(
        p_me,
        google_ai_internal.starving_classes(
            p_me.model, p_me.key_set,
            array(select distinct c.quota_group from pg_catalog.unnest(cands) as c),
            at_now, p_cfg.aging_ms
        ),
        at_now,
        pg_catalog.make_interval(secs => p_cfg.wait_ticket_grace_ms / 1000.0),
        p_cfg.aging_ms
    ) as l;
end;
$$;

revoke all on function google_ai_internal.look_at_line(
    google_ai_internal.wait_tickets, text, text [], integer, public.google_ai_settings
) from public, anon, authenticated;

/*
 * try_backfill: one try for a waiter behind others, when backfill_group
 * says its request fits now without delaying the head (p_head) of its line:
 * reserve_round on that group only. backfill_group counts the room the
 * waiter's own limits leave, so it is asked only where those are the
 * head's: within one class rank, in a class that nothing above binds. Never
 * past a head of a better class (a class is not served while one above it
 * waits in its line), nor past one of a lower class (aging lifted it: its
 * class's reserves and pacing bind it, and each grant to the waiter's class
 * would move the pace it waits for, as it would in a paced class, so the
 * head would lose the slots it heads the line for).
 *
 * Parameters: p_head (the head's ticket id), the requests and tokens ahead,
 * the waiter's candidates, the model row, tokens, caller, request_id,
 * settings, policy and when its wait began.
 * Returns the verdict (granted = false, or null, when there is nothing to
 * backfill). Raises nothing.
 * Example: verdict := google_ai_internal.try_backfill(head, 2, 200, cands, m, 100, 'bot', 'r1', cfg,
 *                         pol, now());
 */
create or replace function google_ai_internal.try_backfill(
    p_head uuid,
    p_ahead integer,
    p_ahead_tokens bigint,
    p_cands google_ai_internal.candidate [],
    p_model public.google_ai_model_limits,
    p_tokens integer,
    p_caller text,
    p_request_id text,
    p_cfg public.google_ai_settings,
    p_policy google_ai_internal.caller_policy,
    p_waiting_since timestamptz
)
returns public.acquire_result
language plpgsql
volatile
set search_path = ''
as $$
declare
    head google_ai_internal.wait_tickets;
    fits_in text;
begin
    select t.* into head from google_ai_internal.wait_tickets as t where t.id = p_head;
    if head.priority is distinct from p_policy.priority or coalesce(p_policy.paced, false)
        or coalesce(pg_catalog.cardinality(p_policy.higher_classes), 0) > 0 then
        return null;
    end if;
    fits_in := google_ai_internal.backfill_group(
        head, p_ahead, p_ahead_tokens, p_tokens, p_cands, p_model.model, p_cfg, google_ai_internal.clock()
    );
    if fits_in is null then
        return null;
    end if;
    return google_ai_internal.reserve_round(
        p_model, array(select c from pg_catalog.unnest(p_cands) as c where c.quota_group = fits_in),
        p_tokens, p_caller, p_request_id, p_cfg, true, p_policy, p_waiting_since
    );
end;
$$;

revoke all on function google_ai_internal.try_backfill(
    uuid, integer, bigint, google_ai_internal.candidate [], public.google_ai_model_limits,
    integer, text, text, public.google_ai_settings, google_ai_internal.caller_policy, timestamptz
) from public, anon, authenticated;

/*
 * keep_place: a 'queued' answer's place, kept: the ticket is told to call
 * back after p_hint_ms (never past p_yield_at or the deadline) and stays
 * alive for a slice and the grace after that; the verdict says where the
 * waiter stands (queue_position, expected_wait_ms: as p_verdict tells it,
 * else the turn) and when to call back.
 *
 * Parameters: p_verdict (queued), p_ticket, p_hint_ms, p_turn (the expected
 * turn), p_ahead, p_remaining_ms, p_yield_at, p_rounds, the settings.
 * Returns the verdict to answer. Raises nothing.
 * Example: verdict := google_ai_internal.keep_place(verdict, me.id, 500, turn, 2, 5000,
 *                         null, 3, cfg);
 */
create or replace function google_ai_internal.keep_place(
    p_verdict public.acquire_result,
    p_ticket uuid,
    p_hint_ms double precision,
    p_turn timestamptz,
    p_ahead integer,
    p_remaining_ms double precision,
    p_yield_at timestamptz,
    p_rounds integer,
    p_cfg public.google_ai_settings
)
returns public.acquire_result
language plpgsql
volatile
set search_path = ''
as $$
declare
    verdict public.acquire_result := p_verdict;
    at_now timestamptz := google_ai_internal.clock();
    hint_ms double precision := p_hint_ms;
begin
    if p_yield_at > at_now then
        hint_ms := least(hint_ms, extract(epoch from p_yield_at - at_now) * 1000);
    end if;
    hint_ms := greatest(0, least(hint_ms, p_remaining_ms));
    verdict.key_alias := null;
    verdict.reservation_id := null;
    verdict.retry_after_ms := pg_catalog.ceil(hint_ms)::integer;
    verdict.queue_position := coalesce(p_ahead, 0) + 1;
    verdict.expected_wait_ms := coalesce(p_verdict.expected_wait_ms, greatest(0, pg_catalog.ceil(
        extract(epoch from coalesce(p_turn, at_now) - at_now) * 1000
    ))::integer);
    update google_ai_internal.wait_tickets as t
    set
        due_at = at_now + pg_catalog.make_interval(secs => hint_ms / 1000.0),
        turn_at = coalesce(p_turn, at_now),
        alive_until = at_now + pg_catalog.make_interval(
            secs => (hint_ms + p_cfg.wait_slice_ms + p_cfg.wait_ticket_grace_ms) / 1000.0
        ),
        rounds = p_rounds
    where t.id = p_ticket;
    return verdict;
end;
$$;

revoke all on function google_ai_internal.keep_place(
    public.acquire_result, uuid, double precision, timestamptz, integer, double precision,
    timestamptz, integer, public.google_ai_settings
) from public, anon, authenticated;

/*
 * call_bounds: how long one WAIT call may go on. The wait ends at the
 * ticket's deadline, fixed by its first call, or sooner when this call's
 * max_wait_ms says so (a caller that counts down its own wait, or gives up
 * with 0). The call itself ends with its slice (wait_slice_ms), and no later
 * than the moment a fallback may be tried (yield_at: the ticket's first call
 * plus p_yield_after_ms) while that is still ahead.
 *
 * Parameters: p_me, the ticket; p_started, the call's start; p_max_wait_ms;
 * p_yield_after_ms (null: no fallback); the settings.
 * Returns the deadline, the end of the slice and yield_at. Raises nothing.
 * Example: select * from google_ai_internal.call_bounds(me, clock_timestamp(), 5000, 2000, cfg);
 */
create or replace function google_ai_internal.call_bounds(
    p_me google_ai_internal.wait_tickets,
    p_started timestamptz,
    p_max_wait_ms integer,
    p_yield_after_ms integer,
    p_cfg public.google_ai_settings,
    out deadline timestamptz,
    out slice_end timestamptz,
    out yield_at timestamptz
)
language plpgsql
stable
set search_path = ''
as $$
begin
    select
        b.deadline,
        least(
            b.deadline,
            p_started + pg_catalog.make_interval(secs => p_cfg.wait_slice_ms / 1000.0),
            case when b.yield_at > p_started then b.yield_at end
        ),
        b.yield_at
    into deadline, slice_end, yield_at
    from (
        select
            least(
                p_me.deadline, p_started + pg_catalog.make_interval(secs => p_max_wait_ms / 1000.0)
            ) as deadline,
            p_me.created_at + pg_catalog.make_interval(secs => p_yield_after_ms / 1000.0) as yield_at
    ) as b;
end;
$$;

revoke all on function google_ai_internal.call_bounds(
    google_ai_internal.wait_tickets, timestamptz, integer, integer, public.google_ai_settings
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
 * returns so that the place is committed (others cannot see it before;
 * retry_after_ms 0 when its turn is due: the next call waits for it).
 * Later calls:
 *   - the head (no live ticket ahead) stays in the database for the slice,
 *     re-trying exactly when the window frees and every wait_recheck_ms (to
 *     catch releases), then answers 'queued' with retry_after_ms 0: call
 *     back at once;
 *   - a waiter behind others answers 'queued' at once with retry_after_ms =
 *     when its turn is expected (turn_estimate, or the time the one ahead
 *     expects its own), less one wait_recheck_ms, so it sleeps without a
 *     connection; once due it waits in the database (await_turn) for the
 *     call of the one ahead to end (its ticket row lock) or for its own turn,
 *     whichever comes first, so that during a burst of freed slots the
 *     waiters present are served side by side; for the rest of its slice at
 *     most, and never for one ahead that is not in the database once its own
 *     turn has come (it backs off by how late that one is);
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
                line.head, line.ahead, line.ahead_tokens, line.cands, p_model, p_tokens, p_caller,
                p_request_id, p_cfg, p_policy, me.created_at
            );
            exit when verdict.granted;
            step := google_ai_internal.turn_behind(
                p_model, line.cands, p_tokens, p_policy, p_cfg, line.nearest, line.ahead_ids,
                remaining_ms, not placed.fresh, slice_end
            );
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
