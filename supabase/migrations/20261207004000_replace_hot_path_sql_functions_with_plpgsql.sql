-- The functions acquire and settle call on their way become PL/pgSQL, with
-- the same signatures, the same queries and the same answers.
--
-- A LANGUAGE sql function with a SET clause (every function here sets
-- search_path = '') is never inlined, and PostgreSQL 15 parses and plans its
-- body again on every call: line_ahead took 0.6 ms a call, starving_classes
-- 0.27, call_bounds 0.15 (an expression), so one WAIT call spent more than
-- a millisecond planning. PL/pgSQL keeps each statement's plan for the
-- session. Measured on one client: WAIT acquire + settle 274-286 -> 470-482
-- pairs/s; NO_WAIT unchanged (it called none of them).

/*
 * cooldown_free_at: when a caller refused by a window's cooldown should look
 * again: when the cooldown ends; but while an outage's probe is out (reason
 * upstream_probe) its answer, not time, ends the hold, so after
 * outage_cooldown_ms.
 *
 * Parameters: p_st, the window row; p_at, the clock; p_cfg, the settings.
 * Returns a timestamptz. Raises nothing.
 * Example: free_at := google_ai_internal.cooldown_free_at(st, at_now, p_cfg);
 */
create or replace function google_ai_internal.cooldown_free_at(
    p_st public.google_ai_quota_state, p_at timestamptz, p_cfg public.google_ai_settings
)
returns timestamptz
language plpgsql
immutable
set search_path = ''
as $$
begin
    return case
        when p_st.cooldown_reason = 'upstream_probe' then least(
            p_st.cooldown_until,
            p_at + pg_catalog.make_interval(secs => p_cfg.outage_cooldown_ms / 1000.0)
        )
        else p_st.cooldown_until
    end;
end;
$$;

revoke all on function google_ai_internal.cooldown_free_at(
    public.google_ai_quota_state, timestamptz, public.google_ai_settings
) from public, anon, authenticated;
/*
 * slots_free_at: when the request slots of a window free: the moments the
 * (p_skip + 1)-th to (p_skip + p_count)-th oldest counted grants after
 * p_swept_to leave it, oldest first. Grants of p_classes are left out
 * (null: none is), so a share of the window can be asked about too. The
 * one home of the k-th-oldest rule.
 *
 * Parameters: p_group, p_model, p_swept_to (the window's horizon), p_hold
 * (window_hold), p_skip (grants that must leave first), p_count, p_classes.
 * Returns up to p_count timestamptz, in order. Raises nothing.
 * Example: select * from google_ai_internal.slots_free_at('free-1', 'gemma-3-27b',
 *              now() - interval '61 s', interval '61 s', 0, 3, null);
 */
create or replace function google_ai_internal.slots_free_at(
    p_group text,
    p_model text,
    p_swept_to timestamptz,
    p_hold interval,
    p_skip bigint,
    p_count integer,
    p_classes text []
)
returns setof timestamptz
language plpgsql
stable
set search_path = ''
as $$
begin
    return query
    select r.granted_at + p_hold
    from public.google_ai_reservations as r
    where
        r.quota_group = p_group and r.model = p_model
        and r.granted_at > p_swept_to and r.counted_requests > 0
        and (p_classes is null or coalesce(r.caller_class <> all(p_classes), true))
    order by r.granted_at
    offset greatest(p_skip, 0) limit p_count;
end;
$$;

revoke all on function google_ai_internal.slots_free_at(
    text, text, timestamptz, interval, bigint, integer, text []
) from public, anon, authenticated;

/*
 * slot_frees_at: when the next request slot of a window frees (the first of
 * slots_free_at), or now + hold when no such grant exists (a promise on the
 * safe side).
 *
 * Parameters: as slots_free_at, without p_count.
 * Returns a timestamptz. Raises nothing.
 * Example: select google_ai_internal.slot_frees_at('free-1', 'gemma-3-27b',
 *              now() - interval '61 s', interval '61 s', 0, null);
 */
create or replace function google_ai_internal.slot_frees_at(
    p_group text,
    p_model text,
    p_swept_to timestamptz,
    p_hold interval,
    p_skip bigint,
    p_classes text []
)
returns timestamptz
language plpgsql
stable
set search_path = ''
as $$
begin
    return coalesce(
        (select min(f) from google_ai_internal.slots_free_at(
            p_group, p_model, p_swept_to, p_hold, p_skip, 1, p_classes
        ) as f),
        google_ai_internal.clock() + p_hold
    );
end;
$$;

revoke all on function google_ai_internal.slot_frees_at(
    text, text, timestamptz, interval, bigint, text []
) from public, anon, authenticated;

/*
 * tokens_free_at: when p_need input tokens of a window have freed: the
 * moment the oldest counted grants after p_swept_to that hold that many
 * tokens have left it. Grants of p_classes are left out (null: none is).
 *
 * Parameters: p_group, p_model, p_swept_to, p_hold, p_need (tokens that
 * must leave), p_classes.
 * Returns a timestamptz; now + hold when the window never frees that many.
 * Raises nothing.
 * Example: select google_ai_internal.tokens_free_at('free-1', 'gemma-3-27b',
 *              now() - interval '61 s', interval '61 s', 1200, null);
 */
create or replace function google_ai_internal.tokens_free_at(
    p_group text,
    p_model text,
    p_swept_to timestamptz,
    p_hold interval,
    p_need bigint,
    p_classes text []
)
returns timestamptz
language plpgsql
stable
set search_path = ''
as $$
begin
    return coalesce((
        select w.granted_at + p_hold
        from (
            select
                r.granted_at,
                sum(r.counted_tokens) over (order by r.granted_at, r.id) as freed
            from public.google_ai_reservations as r
            where
                r.quota_group = p_group and r.model = p_model
                and r.granted_at > p_swept_to and r.counted_tokens > 0
                and (p_classes is null or coalesce(r.caller_class <> all(p_classes), true))
        ) as w
        where w.freed >= p_need
        order by w.granted_at
        limit 1
    ), google_ai_internal.clock() + p_hold);
end;
$$;

revoke all on function google_ai_internal.tokens_free_at(
    text, text, timestamptz, interval, bigint, text []
) from public, anon, authenticated;

/*
 * higher_class_active: whether a class that ranks above p_priority was
 * granted on this window within the hold (the window row's lead), or waits
 * for the model now (a live ticket).
 *
 * Parameters: p_st, the locked window row; p_model; p_priority, the
 * caller's class priority; p_now, p_hold.
 * Returns a boolean. Raises nothing.
 * Example: select google_ai_internal.higher_class_active(st, 'gemma-3-27b', 90, now(), interval '61 s');
 */
create or replace function google_ai_internal.higher_class_active(
    p_st public.google_ai_quota_state,
    p_model text,
    p_priority integer,
    p_now timestamptz,
    p_hold interval
)
returns boolean
language plpgsql
stable
set search_path = ''
as $$
begin
    return
        (p_st.lead_at > p_now - p_hold and p_st.lead_priority < p_priority)
        or exists (
            select from google_ai_internal.wait_tickets as t
            where t.model = p_model and t.priority < p_priority and t.alive_until > p_now
        );
end;
$$;

revoke all on function google_ai_internal.higher_class_active(
    public.google_ai_quota_state, text, integer, timestamptz, interval
) from public, anon, authenticated;
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
        (pg_catalog.array_agg(x.id order by x.rank desc, x.turn desc, x.served_at desc, x.seq desc))[1],
        (pg_catalog.array_agg(x.id order by x.rank, x.turn, x.served_at, x.seq))[1]
    into ahead, ahead_tokens, nearest, head
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
