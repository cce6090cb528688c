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
language sql
immutable
set search_path = ''
as $$
    select pg_catalog.md5(coalesce(pg_catalog.array_to_string(array(
        select distinct a from pg_catalog.unnest(p_key_aliases) as a order by a
    ), ','), '*'))
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
 * turn_estimate: the earliest moment a waiter with `p_ahead` requests
 * (`p_ahead_tokens` tokens) ahead of it in line could be granted, read from
 * the ledger without locks: its slot is the (p_ahead + 1)-th request slot to
 * free across the candidate groups (a slot used again frees a window later),
 * no sooner than the group's TPM has room for the tokens ahead (an even
 * share per group) plus its own, nor before a cooldown or a spent day ends. A release can only make it sooner, which
 * the head of the queue catches; other queues on the same groups can make it
 * later, which the waiter finds out when it calls back.
 *
 * Parameters: the model, its candidates (acquire's order), the requests and
 * tokens ahead, the waiter's own tokens, the settings.
 * Returns a timestamptz on google_ai_internal.clock(). Raises nothing.
 * Example: select google_ai_internal.turn_estimate(m, cands, 3, 3600, 1200, cfg);
 */
create or replace function google_ai_internal.turn_estimate(
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
    hold interval := google_ai_internal.window_hold(p_cfg);
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

        floor_at := greatest(at_now, google_ai_internal.cooldown_free_at(st, at_now, p_cfg));
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

revoke all on function google_ai_internal.turn_estimate(
    public.google_ai_model_limits, google_ai_internal.candidate [], integer, bigint, integer,
    public.google_ai_settings
) from public, anon, authenticated;

/*
 * queue_rank: where a waiter stands in its queue: its class priority, lowered
 * linearly to 0 (the top) over google_ai_settings.aging_ms of waiting, so no
 * class starves. Ties go by ticket order (seq): after aging_ms a waiter is
 * ahead of everyone who joined after it, whatever their class.
 *
 * Parameters: p_priority, the ticket's class priority; p_created_at, when it
 * joined; p_now; p_aging_ms.
 * Returns the rank (lower is served first). Raises nothing.
 * Example: select google_ai_internal.queue_rank(90, now() - interval '30 s', now(), 60000);
 */
create or replace function google_ai_internal.queue_rank(
    p_priority integer, p_created_at timestamptz, p_now timestamptz, p_aging_ms integer
)
returns double precision
language sql
immutable
set search_path = ''
as $$
    select p_priority * greatest(
        0, 1 - extract(epoch from p_now - p_created_at) * 1000 / p_aging_ms
    )::double precision
$$;

revoke all on function google_ai_internal.queue_rank(integer, timestamptz, timestamptz, integer)
from public, anon, authenticated;

/*
 * wait_in_line: one call of a WAIT that holds a ticket (a place in the
 * queue of its model and key set, kept between calls). The queue is served
 * by rank (queue_rank: class priority, aged), then ticket order; "ahead"
 * below means ahead in that order.
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
 *   - at the deadline the head tries once more; anyone not granted then is
 *     refused 'wait_timeout' with a truthful retry_after_ms.
 * A ticket ahead counts while its owner is in a call, or until
 * wait_ticket_grace_ms after the moment it was told to call back: a killed
 * or disconnected owner stops holding the line about a second after it
 * missed its turn. A waiter never sleeps past the moment the one ahead of it
 * would be found gone (one slice plus the grace while that one is in a
 * call), so the line moves on within a few seconds.
 * A grant or a final refusal deletes the ticket; 'queued' refreshes it.
 *
 * Parameters: acquire's ticket, model row, key_aliases, tokens, caller,
 * request_id, max_wait_ms (used by the ticket's first call, and by tickets
 * made before the deadline was stored), the settings, when the call
 * started, and the caller's policy (its class and priority).
 * Returns the verdict (waited_ms counted from the ticket's first call) and
 * the number of looks at the queue over the whole wait. Raises nothing.
 * Example: select * from google_ai_internal.wait_in_line(
 *              gen_random_uuid(), m, null, 100, 'bot', 'r1', 5000, cfg, clock_timestamp(),
 *              google_ai_internal.caller_policy('bot'));
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
    out verdict public.acquire_result,
    out rounds integer
)
language plpgsql
volatile
set search_path = ''
set plan_cache_mode = force_generic_plan
as $$
declare
    queue_keys text := google_ai_internal.queue_key_set(p_key_aliases);
    deadline timestamptz;
    slice_end timestamptz;
    lead_ms integer := p_cfg.wait_recheck_ms;
    grace interval := pg_catalog.make_interval(secs => p_cfg.wait_ticket_grace_ms / 1000.0);
    me google_ai_internal.wait_tickets;
    pred google_ai_internal.wait_tickets;
    fresh boolean := false;
    present boolean;
    cands google_ai_internal.candidate [];
    ahead integer;
    ahead_tokens bigint;
    turn timestamptz;
    at_now timestamptz;
    remaining_ms double precision;
    hint_ms double precision;
begin
    -- Places whose owner stopped calling back stop counting, whoever sweeps them.
    delete from google_ai_internal.wait_tickets as t
    where t.id in (
        select x.id from google_ai_internal.wait_tickets as x
        where x.alive_until < google_ai_internal.clock()
        for update skip locked
    );

    select t.* into me from google_ai_internal.wait_tickets as t where t.id = p_ticket for update;
    if me.id is not null and (me.model <> p_model.model or me.key_set <> queue_keys) then
        -- The same ticket for another queue: a new place at that queue's tail.
        delete from google_ai_internal.wait_tickets as t where t.id = p_ticket;
        me := null;
    end if;
    if me.id is null then
        at_now := google_ai_internal.clock();
        insert into google_ai_internal.wait_tickets as t (
            id, model, key_set, tokens, caller, request_id, created_at, due_at, turn_at,
            alive_until, deadline, priority, caller_class
        ) values (
            p_ticket, p_model.model, queue_keys, p_tokens, p_caller, p_request_id, at_now,
            at_now, at_now, at_now + pg_catalog.make_interval(
                secs => (p_cfg.wait_slice_ms + p_cfg.wait_ticket_grace_ms) / 1000.0
            ),
            -- Real time, like every deadline here; from the insert, so waited_ms
            -- (counted from created_at) reaches max_wait_ms at the deadline.
            pg_catalog.clock_timestamp()
                + pg_catalog.make_interval(secs => p_max_wait_ms / 1000.0),
            p_policy.priority, p_policy.caller_class
        )
        -- A retry after a lost connection may race the call it replaces.
        on conflict (id) do nothing
        returning t.* into me;
        if me.id is null then
            select t.* into me
            from google_ai_internal.wait_tickets as t where t.id = p_ticket for update;
        else
            fresh := true;
        end if;
    end if;
    -- The wait ends at the ticket's deadline, fixed by its first call, or
    -- sooner when this call's max_wait_ms says so (a caller that counts down
    -- its own wait, or gives up with 0).
    deadline := least(
        me.deadline, p_started + pg_catalog.make_interval(secs => p_max_wait_ms / 1000.0)
    );
    slice_end := least(
        deadline, p_started + pg_catalog.make_interval(secs => p_cfg.wait_slice_ms / 1000.0)
    );
    rounds := me.rounds;
    verdict.granted := false;
    verdict.model := coalesce(p_model.api_model, p_model.model);

    loop
        rounds := rounds + 1;
        at_now := google_ai_internal.clock();
        pred := null;
        select t.* into pred
        from google_ai_internal.wait_tickets as t
        where
            t.model = me.model and t.key_set = me.key_set and t.id <> me.id
            and (google_ai_internal.queue_rank(t.priority, t.created_at, at_now, p_cfg.aging_ms), t.seq)
            < (google_ai_internal.queue_rank(me.priority, me.created_at, at_now, p_cfg.aging_ms), me.seq)
            and t.alive_until > at_now
            and (t.due_at + grace > at_now or google_ai_internal.ticket_in_call(t.id))
        order by
            google_ai_internal.queue_rank(t.priority, t.created_at, at_now, p_cfg.aging_ms) desc,
            t.seq desc
        limit 1;
        cands := array(
            select c
            from google_ai_internal.candidates(p_model.model, p_key_aliases, at_now, p_tokens) as c
        );
        remaining_ms := extract(epoch from deadline - pg_catalog.clock_timestamp()) * 1000;

        if pred.id is null then
            verdict := google_ai_internal.reserve_round(
                p_model, cands, p_tokens, p_caller, p_request_id, p_cfg, true, p_policy
            );
            exit when verdict.granted or verdict.reason = 'no_key';
            if remaining_ms <= 0 then
                verdict.reason := 'wait_timeout';
                exit;
            end if;
            -- Nothing but time frees a cooldown or a day.
            exit when
                verdict.reason in ('rpd', 'cooldown') and verdict.retry_after_ms > remaining_ms;
            turn := at_now + pg_catalog.make_interval(secs => verdict.retry_after_ms / 1000.0);
            if verdict.reason in ('rpd', 'cooldown') then
                hint_ms := verdict.retry_after_ms - lead_ms;
                verdict.reason := 'queued';
                exit;
            end if;
            if fresh or pg_catalog.clock_timestamp() >= slice_end then
                hint_ms := 0;
                verdict.reason := 'queued';
                exit;
            end if;
            perform pg_catalog.pg_sleep(least(
                verdict.retry_after_ms,
                p_cfg.wait_recheck_ms,
                remaining_ms,
                extract(epoch from slice_end - pg_catalog.clock_timestamp()) * 1000
            ) / 1000.0);
            continue;
        end if;

        -- Behind others: when could this waiter's turn come?
        select count(*)::integer, coalesce(sum(t.tokens), 0)
        into ahead, ahead_tokens
        from google_ai_internal.wait_tickets as t
        where
            t.model = me.model and t.key_set = me.key_set and t.id <> me.id
            and (google_ai_internal.queue_rank(t.priority, t.created_at, at_now, p_cfg.aging_ms), t.seq)
            < (google_ai_internal.queue_rank(me.priority, me.created_at, at_now, p_cfg.aging_ms), me.seq)
            and t.alive_until > at_now
            and (t.due_at + grace > at_now or google_ai_internal.ticket_in_call(t.id));
        turn := greatest(
            google_ai_internal.turn_estimate(p_model, cands, ahead, ahead_tokens, p_tokens, p_cfg),
            pred.turn_at
        );
        verdict.key_alias := null;
        verdict.reservation_id := null;
        verdict.retry_after_ms := greatest(
            1, pg_catalog.ceil(extract(epoch from turn - at_now) * 1000)
        )::integer;
        if remaining_ms <= 0 then
            verdict.reason := 'wait_timeout';
            exit;
        end if;
        hint_ms := extract(epoch from turn - at_now) * 1000 - lead_ms;
        present := google_ai_internal.ticket_in_call(pred.id);
        if hint_ms > 0 or fresh or not present or pg_catalog.clock_timestamp() >= slice_end then
            if hint_ms <= 0 and not present then
                -- Due, but the one ahead is not here: until it is due, wait for
                -- that; once it is late, back off by how late it is. Either way
                -- without a connection.
                hint_ms := greatest(
                    p_cfg.wait_recheck_ms,
                    pg_catalog.abs(extract(epoch from at_now - pred.due_at)) * 1000
                );
            end if;
            -- Look again by the time the one ahead would be found gone.
            hint_ms := greatest(p_cfg.wait_recheck_ms, least(
                hint_ms,
                case
                    when present then p_cfg.wait_slice_ms + p_cfg.wait_ticket_grace_ms
                    else extract(epoch from pred.due_at + grace - at_now) * 1000
                end
            ));
            verdict.reason := 'queued';
            exit;
        end if;
        -- Due, and the one ahead is in a call: wait for it to end (granted, or
        -- its slice over), then look again.
        begin
            perform pg_catalog.set_config('lock_timeout', greatest(1, pg_catalog.ceil(
                extract(epoch from slice_end - pg_catalog.clock_timestamp()) * 1000
            ))::text || 'ms', true);
            perform 1 from google_ai_internal.wait_tickets as t where t.id = pred.id for update;
            raise exception using errcode = 'LL999';
        exception
            when sqlstate 'LL999' or lock_not_available then null;  -- lock and setting undone
        end;
    end loop;

    if verdict.reason = 'queued' then
        hint_ms := greatest(0, least(hint_ms, remaining_ms));
        at_now := google_ai_internal.clock();
        verdict.key_alias := null;
        verdict.reservation_id := null;
        verdict.retry_after_ms := pg_catalog.ceil(hint_ms)::integer;
        update google_ai_internal.wait_tickets as t
        set
            due_at = at_now + pg_catalog.make_interval(secs => hint_ms / 1000.0),
            turn_at = coalesce(turn, at_now),
            alive_until = at_now + pg_catalog.make_interval(
                secs => (hint_ms + p_cfg.wait_slice_ms + p_cfg.wait_ticket_grace_ms) / 1000.0
            ),
            rounds = wait_in_line.rounds
        where t.id = me.id;
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
    public.google_ai_settings, timestamptz, google_ai_internal.caller_policy
) from public, anon, authenticated;
