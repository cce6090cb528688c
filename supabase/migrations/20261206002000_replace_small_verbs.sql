-- Small verbs: run_maintenance's steps as functions of their own
-- (expire_leases, roll_up_ledger, trim_audit, log_maintenance), each read at
-- once; turn_estimate reads each group's slots through group_slots. And
-- backfill in the WAIT lines: a waiter behind a head that waits for tokens
-- is served when its request fits without delaying the head's grant
-- (backfill_group; line_ahead also names the head). usage_report reads
-- its events from usage_events. Written from supabase/schemas (240, 345,
-- 400).

-- A caller's policy names the models it has a budget for, read in the same
-- one statement, so a caller without a budget reads no budget row.
alter type google_ai_internal.caller_policy add attribute budget_models text [];

-- turn_estimate counts the pace of a paced class (a new argument).
drop function google_ai_internal.turn_estimate(
    public.google_ai_model_limits, google_ai_internal.candidate [], integer, bigint, integer,
    public.google_ai_settings
);

-- line_ahead names the head too (a new row type); turn_behind takes the id
-- of the one ahead and answers a whole verdict.
drop function google_ai_internal.line_ahead(
    google_ai_internal.wait_tickets, text [], timestamptz, interval, integer
);
drop function google_ai_internal.turn_behind(
    public.google_ai_model_limits, google_ai_internal.candidate [], integer,
    public.google_ai_settings, google_ai_internal.wait_tickets, integer, bigint,
    double precision, boolean, timestamptz
);

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
language sql
stable
set search_path = ''
as $$
    select r.granted_at + p_hold
    from public.google_ai_reservations as r
    where
        r.quota_group = p_group and r.model = p_model
        and r.granted_at > p_swept_to and r.counted_requests > 0
        and (p_classes is null or coalesce(r.caller_class <> all(p_classes), true))
    order by r.granted_at
    offset greatest(p_skip, 0) limit p_count
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
language sql
stable
set search_path = ''
as $$
    select coalesce(
        (select min(f) from google_ai_internal.slots_free_at(
            p_group, p_model, p_swept_to, p_hold, p_skip, 1, p_classes
        ) as f),
        google_ai_internal.clock() + p_hold
    )
$$;

revoke all on function google_ai_internal.slot_frees_at(
    text, text, timestamptz, interval, bigint, text []
) from public, anon, authenticated;

/*
 * group_slots: the next request slots of one candidate group for a waiter
 * with p_ahead requests ahead of it: the (p_ahead + 1) earliest moments a
 * request could be granted there, read from the ledger without locks. A
 * free slot serves now; a used one frees when its grant leaves the window,
 * and each slot serves again a whole window after it is used. None comes
 * before a cooldown or a spent day ends, nor before the group's TPM has
 * room for p_need_tokens more. A paced waiter (p_paced: a class above has
 * members) gets its slots no faster than try_reserve hands them out: one
 * per emission interval (hold / rpm) from the window's paced_until.
 *
 * Parameters: p_cand (the group's first key, with its limits), p_model (a
 * limits row name), p_ahead, p_need_tokens (the tokens ahead that fall to
 * this group, plus the waiter's own), p_paced, the settings, p_now, p_hold.
 * Returns the slots in time order. Raises nothing.
 * Example: select google_ai_internal.group_slots(cand, 'gemma-3-27b', 3, 4800, false, cfg, now(),
 *              interval '61 s');
 */
create or replace function google_ai_internal.group_slots(
    p_cand google_ai_internal.candidate,
    p_model text,
    p_ahead integer,
    p_need_tokens bigint,
    p_paced boolean,
    p_cfg public.google_ai_settings,
    p_now timestamptz,
    p_hold interval
)
returns timestamptz []
language plpgsql
stable
set search_path = ''
set plan_cache_mode = force_generic_plan
as $$
declare
    used record;
    st public.google_ai_quota_state;
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

    free_now := least(greatest(coalesce(p_cand.rpm - used.requests, p_ahead + 1), 0), p_ahead + 1);
    slots := pg_catalog.array_fill(floor_at, array[free_now]);
    if free_now < p_ahead + 1 then
        slots := slots || array(
            select greatest(f, floor_at)
            from google_ai_internal.slots_free_at(
                p_cand.quota_group, p_model, p_now - p_hold, p_hold, used.requests - p_cand.rpm,
                p_ahead + 1 - free_now, null
            ) as f
        );
        while pg_catalog.cardinality(slots) < p_ahead + 1 loop
            slots := slots || (slots[pg_catalog.cardinality(slots) + 1 - p_cand.rpm] + p_hold);
        end loop;
    end if;
    if p_paced and p_cand.rpm > 0 then
        -- GCRA's pace, as pacing_free_at applies it: the k-th grant from now comes no
        -- sooner than paced_until less one interval, plus k - 1 intervals.
        slots := array(
            select greatest(
                x.at,
                greatest(p_now, st.paced_until - p_hold / p_cand.rpm)
                    + (x.k - 1) * (p_hold / p_cand.rpm)
            )
            from pg_catalog.unnest(slots) with ordinality as x (at, k)
            order by x.k
        );
    end if;
    return slots;
end;
$$;

revoke all on function google_ai_internal.group_slots(
    google_ai_internal.candidate, text, integer, bigint, boolean, public.google_ai_settings,
    timestamptz, interval
) from public, anon, authenticated;

/*
 * turn_estimate: the earliest moment a waiter with `p_ahead` requests
 * (`p_ahead_tokens` tokens) ahead of it in line could be granted: its slot
 * is the (p_ahead + 1)-th to free across the candidate groups (group_slots;
 * the tokens ahead shared evenly between the groups). A release can only
 * make it sooner, which the head of the queue catches; other queues on the
 * same groups can make it later, which the waiter finds out when it calls
 * back.
 *
 * Parameters: the model, its candidates (acquire's order), the requests and
 * tokens ahead, the waiter's own tokens, whether its class is paced, the
 * settings.
 * Returns a timestamptz on google_ai_internal.clock(). Raises nothing.
 * Example: select google_ai_internal.turn_estimate(m, cands, 3, 3600, 1200, false, cfg);
 */
create or replace function google_ai_internal.turn_estimate(
    p_model public.google_ai_model_limits,
    p_cands google_ai_internal.candidate [],
    p_ahead integer,
    p_ahead_tokens bigint,
    p_tokens integer,
    p_paced boolean,
    p_cfg public.google_ai_settings
)
returns timestamptz
language plpgsql
stable
set search_path = ''
as $$
declare
    at_now timestamptz := google_ai_internal.clock();
    hold interval := google_ai_internal.window_hold(p_cfg);
    groups integer;
    cand google_ai_internal.candidate;
    tried text [] := '{}';
    slots timestamptz [] := '{}';
begin
    select count(distinct c.quota_group) into groups from pg_catalog.unnest(p_cands) as c;
    if groups = 0 then
        return at_now;
    end if;
    foreach cand in array p_cands loop
        continue when cand.quota_group = any(tried);  -- each group once, on its best key
        tried := tried || cand.quota_group;
        slots := slots || google_ai_internal.group_slots(
            cand, p_model.model, p_ahead, p_ahead_tokens / groups + p_tokens, p_paced, p_cfg,
            at_now, hold
        );
    end loop;
    return coalesce(
        (select s from pg_catalog.unnest(slots) as s order by s offset p_ahead limit 1),
        at_now + hold
    );
end;
$$;

revoke all on function google_ai_internal.turn_estimate(
    public.google_ai_model_limits, google_ai_internal.candidate [], integer, bigint, integer,
    boolean, public.google_ai_settings
) from public, anon, authenticated;

/*
 * line_ahead: who is ahead of a waiter in its queue: the live tickets of
 * the same model and key set that rank before it (queue_rank, then seq)
 * and still hold their place (their owner is in a call, or is less than
 * the grace late). The one definition of "ahead".
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
    select
        count(*)::integer,
        coalesce(sum(x.tokens), 0)::bigint,
        (pg_catalog.array_agg(x.id order by x.rank desc, x.seq desc))[1],
        (pg_catalog.array_agg(x.id order by x.rank, x.seq))[1]
    from (
        select
            t.id, t.tokens, t.seq, t.due_at,
            google_ai_internal.queue_rank(t, p_starving, p_now, p_aging_ms) as rank
        from google_ai_internal.wait_tickets as t
        where
            t.model = p_me.model and t.key_set = p_me.key_set and t.id <> p_me.id
            and t.alive_until > p_now
    ) as x
    where
        (x.rank, x.seq)
        < (google_ai_internal.queue_rank(p_me, p_starving, p_now, p_aging_ms), p_me.seq)
        and (x.due_at + p_grace > p_now or google_ai_internal.ticket_in_call(x.id))
$$;

revoke all on function google_ai_internal.line_ahead(
    google_ai_internal.wait_tickets, text [], timestamptz, interval, integer
) from public, anon, authenticated;

/*
 * backfill_group: where a waiter behind others may be served now without
 * delaying the head of its line (backfill). The head waits for tokens in a
 * group (its request does not fit the group's TPM yet); the waiter's fits
 * now, a request slot stays for the head, and the waiter's tokens leave the
 * window after every grant in it, so the exact log says the head fits no
 * later with them than without. A smaller request then goes ahead instead of
 * TPM idling; aging still bounds every wait (the head keeps its place).
 *
 * Parameters: p_head, the head's ticket; p_tokens, the waiter's; the
 * model's candidates and name; the settings; p_now.
 * Returns the quota group to try, or null. Raises nothing.
 * Example: select google_ai_internal.backfill_group(head, 1500, cands, 'gemma-3-27b', cfg, now());
 */
create or replace function google_ai_internal.backfill_group(
    p_head google_ai_internal.wait_tickets,
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
        continue when cand.tpm is null;
        select coalesce(sum(r.counted_requests), 0) as requests, coalesce(sum(r.counted_tokens), 0) as tokens
        into used
        from public.google_ai_reservations as r
        where r.quota_group = cand.quota_group and r.model = p_model and r.granted_at > p_now - hold;
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
    google_ai_internal.wait_tickets, integer, google_ai_internal.candidate [], text,
    public.google_ai_settings, timestamptz
) from public, anon, authenticated;

/*
 * turn_behind: when a waiter behind others (p_pred, the nearest one ahead;
 * p_ahead and p_ahead_tokens, all of them) could be served, and what it
 * does now: told to call back when its turn is expected, less one
 * wait_recheck_ms, so it sleeps without a connection; or, once due and while
 * the one ahead is in a call, wait for that call to end (done false: the
 * caller waits on its ticket). It never sleeps past the moment the one ahead
 * would be found gone (one slice plus the grace while that one is in a call,
 * its due time plus the grace otherwise), and backs off by how late the one
 * ahead is when it is due but the one ahead is not here.
 *
 * Parameters: the model row, its candidates, the tokens, whether the
 * waiter's class is paced, the settings, the one ahead's ticket id, how many are ahead and their tokens, the ms left
 * until the deadline, whether this call may stay, the end of its slice.
 * Returns the verdict (queued or wait_timeout, retry_after_ms when the turn
 * is expected), the turn, the hint and whether the call is done.
 * Raises nothing.
 * Example: select * from google_ai_internal.turn_behind(m, cands, 100, false, cfg, pred_id, 2, 200,
 *              5000, true, clock_timestamp() + interval '2 s');
 */
create or replace function google_ai_internal.turn_behind(
    p_model public.google_ai_model_limits,
    p_cands google_ai_internal.candidate [],
    p_tokens integer,
    p_paced boolean,
    p_cfg public.google_ai_settings,
    p_pred uuid,
    p_ahead integer,
    p_ahead_tokens bigint,
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
begin
    select t.* into pred from google_ai_internal.wait_tickets as t where t.id = p_pred;
    done := true;
    turn := greatest(
        google_ai_internal.turn_estimate(
            p_model, p_cands, p_ahead, p_ahead_tokens, p_tokens, p_paced, p_cfg
        ),
        pred.turn_at
    );
    verdict.granted := false;
    verdict.model := coalesce(p_model.api_model, p_model.model);
    verdict.reason := case when p_remaining_ms <= 0 then 'wait_timeout' else 'queued' end;
    verdict.retry_after_ms := greatest(
        1, pg_catalog.ceil(extract(epoch from turn - at_now) * 1000)
    )::integer;
    if p_remaining_ms <= 0 then
        return;
    end if;
    hint_ms := extract(epoch from turn - at_now) * 1000 - p_cfg.wait_recheck_ms;
    present := google_ai_internal.ticket_in_call(pred.id);
    if hint_ms <= 0 and present and p_may_stay and pg_catalog.clock_timestamp() < p_slice_end then
        done := false;
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
    public.google_ai_model_limits, google_ai_internal.candidate [], integer, boolean,
    public.google_ai_settings, uuid, integer, bigint, double precision, boolean, timestamptz
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
    select l.ahead, l.ahead_tokens, l.nearest, l.head into ahead, ahead_tokens, nearest, head
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
 * reserve_round on that group only.
 *
 * Parameters: p_head (the head's ticket id), the waiter's candidates, the
 * model row, tokens, caller, request_id, settings, policy and when its wait
 * began.
 * Returns the verdict (granted = false, or null, when there is nothing to
 * backfill). Raises nothing.
 * Example: verdict := google_ai_internal.try_backfill(head, cands, m, 100, 'bot', 'r1', cfg,
 *                         pol, now());
 */
create or replace function google_ai_internal.try_backfill(
    p_head uuid,
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
    fits_in := google_ai_internal.backfill_group(
        head, p_tokens, p_cands, p_model.model, p_cfg, google_ai_internal.clock()
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
    uuid, google_ai_internal.candidate [], public.google_ai_model_limits, integer, text, text,
    public.google_ai_settings, google_ai_internal.caller_policy, timestamptz
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
language sql
stable
set search_path = ''
as $$
    select
        b.deadline,
        least(
            b.deadline,
            p_started + pg_catalog.make_interval(secs => p_cfg.wait_slice_ms / 1000.0),
            case when b.yield_at > p_started then b.yield_at end
        ),
        b.yield_at
    from (
        select
            least(
                p_me.deadline, p_started + pg_catalog.make_interval(secs => p_max_wait_ms / 1000.0)
            ) as deadline,
            p_me.created_at + pg_catalog.make_interval(secs => p_yield_after_ms / 1000.0) as yield_at
    ) as b
$$;

revoke all on function google_ai_internal.call_bounds(
    google_ai_internal.wait_tickets, timestamptz, integer, integer, public.google_ai_settings
) from public, anon, authenticated;

/*
 * wait_in_line: one call of a WAIT that holds a ticket (a place in the
 * queue of its model and key set, kept between calls). The queue is served
 * by rank (queue_rank: class priority; a starving class's old waiters
 * first), then ticket order; "ahead" is line_ahead.
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

/*
 * caller_policy: the policy acquire() applies to a caller. A session whose
 * login is some policy row's login_role acts as that row's caller, whatever
 * name it passed; a name no row holds is in class `default` (priority 50, no
 * fallback, should that row be gone). The policy is paced (try_reserve)
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
        c.fallback_after_ms, budgets.models
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
 * fold_refusal: count a refusal into the newest google_ai_refusals row of
 * the same fold (caller, model, key set, reported key and reason) when that
 * row saw its last refusal at most refusal_fold_ms ago and began less than
 * one window ago: its count and last time move on (one HOT update, locking
 * only that row).
 *
 * Parameters: p_fold (the fold's hash), the verdict, the model, caller and
 * sorted key set, the settings, p_now.
 * Returns whether the refusal was folded. Raises nothing.
 * Example: select google_ai_internal.fold_refusal(42, v, 'gemma-3-27b', 'bot', null, cfg, now());
 */
create or replace function google_ai_internal.fold_refusal(
    p_fold bigint,
    p_verdict public.acquire_result,
    p_model text,
    p_caller text,
    p_key_set text [],
    p_cfg public.google_ai_settings,
    p_now timestamptz
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
        and f.key_set is not distinct from p_key_set
        and f.key_alias is not distinct from p_verdict.key_alias
        and f.reason is not distinct from p_verdict.reason;
    return found;
end;
$$;

revoke all on function google_ai_internal.fold_refusal(
    bigint, public.acquire_result, text, text, text [], public.google_ai_settings, timestamptz
) from public, anon, authenticated;

/*
 * record_acquire_verdict: record one acquire() verdict.
 *
 * A grant writes nothing here: its ledger row (written by try_reserve) is its
 * record. A refusal folds into the newest row of the same caller, model, key
 * set (p_key_aliases, sorted; null = every key), reported key and reason
 * (fold_refusal); otherwise a new row starts. Two callers
 * that start the same fold at the same instant may start two rows; every
 * refusal is still counted once.
 *
 * Parameters: the verdict, the resolved model, acquire's own arguments (mode
 * upper-cased), the number of reservation rounds, and the key set.
 * Returns nothing. Raises nothing of its own.
 * Example: perform google_ai_internal.record_acquire_verdict(
 *              verdict, 'gemma-3-27b', 1200, 'WAIT', 30000, 3, 'bot', 'msg-42',
 *              array['bot-key-1']);
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
    p_key_aliases text [] default null
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
        '%L %L %L %L %L', p_caller, p_model, wanted_set::text, p_verdict.key_alias, p_verdict.reason
    ), 0);

    if cfg.refusal_fold_ms > 0 then
        if google_ai_internal.fold_refusal(
            fold, p_verdict, p_model, p_caller, wanted_set, cfg, at_now
        ) then
            return;
        end if;
    end if;

    insert into public.google_ai_refusals (
        fold_key, first_at, last_at, model, key_alias, key_set, reason, caller, request_id,
        mode, tokens, max_wait_ms, waited_ms, rounds, retry_after_ms
    ) values (
        fold, at_now, at_now, p_model, p_verdict.key_alias, wanted_set, p_verdict.reason,
        p_caller, p_request_id, p_mode, p_tokens, p_max_wait_ms, p_verdict.waited_ms,
        p_rounds, p_verdict.retry_after_ms
    );
end;
$$;

revoke all on function google_ai_internal.record_acquire_verdict(
    public.acquire_result, text, integer, text, integer, integer, text, text, text []
) from public, anon, authenticated;

/*
 * acquire_within_budget: acquire_on under the caller's daily budget for the
 * model: refused caller_budget when it is spent, and a grant counted
 * against it (refunded and refused when a concurrent grant spent it first).
 *
 * Parameters: acquire_on's, then p_today (the Pacific day).
 * Returns the verdict and the rounds it took. Raises what acquire_on raises.
 * Example: select * from google_ai_internal.acquire_within_budget(m, 100, true, 5000,
 *              null, 'bot', 'r1', null, cfg, clock_timestamp(), pol, null, current_date);
 */
create or replace function google_ai_internal.acquire_within_budget(
    p_model public.google_ai_model_limits,
    p_tokens integer,
    p_wait boolean,
    p_max_wait_ms integer,
    p_key_aliases text [],
    p_caller text,
    p_request_id text,
    p_ticket uuid,
    p_cfg public.google_ai_settings,
    p_started timestamptz,
    p_policy google_ai_internal.caller_policy,
    p_yield_after_ms integer,
    p_today date,
    out verdict public.acquire_result,
    out rounds integer
)
language plpgsql
volatile
set search_path = ''
as $$
declare
    -- Most callers have no budget: no budget row is read for them.
    budgeted boolean := p_model.model = any(p_policy.budget_models);
    attempt record;
begin
    rounds := 0;
    if budgeted and not google_ai_internal.spend_budget(
        p_caller, p_model.model, p_tokens, p_today, false
    ) then
        verdict := google_ai_internal.budget_refusal(p_model, p_cfg, p_started);
        return;
    end if;
    attempt := google_ai_internal.acquire_on(
        p_model, p_tokens, p_wait, p_max_wait_ms, p_key_aliases, p_caller, p_request_id,
        p_ticket, p_cfg, p_started, p_policy, p_yield_after_ms
    );
    verdict := attempt.verdict;
    rounds := attempt.rounds;
    if budgeted and verdict.granted and not google_ai_internal.spend_budget(
        p_caller, p_model.model, p_tokens, p_today, true
    ) then
        perform google_ai_internal.release_reservation(
            google_ai_internal.lock_reservation(verdict.reservation_id), 'caller_budget', false
        );
        verdict := google_ai_internal.budget_refusal(p_model, p_cfg, p_started);
    end if;
end;
$$;

revoke all on function google_ai_internal.acquire_within_budget(
    public.google_ai_model_limits, integer, boolean, integer, text [], text, text, uuid,
    public.google_ai_settings, timestamptz, google_ai_internal.caller_policy, integer, date
) from public, anon, authenticated;

/*
 * acquire_along_chain: acquire()'s walk along the fallback chain from the
 * model its ticket waits on: on each model, first the fallback in time
 * (fall_back_now, once the wait has lasted the class's fallback_after_ms),
 * then a wait in line or one try under the caller's budget
 * (acquire_within_budget). A 'queued' answer ends the walk (the wait goes
 * on); a final refusal moves it to the next model, keeping the ticket and
 * what remains of max_wait_ms. When every model refuses, the first refusal
 * says why, for the model asked for.
 *
 * Parameters: the model asked for (its limits row) and its chain, the step
 * its ticket waits on and since when (null:
 * no ticket yet), acquire's tokens, whether it waits, max_wait_ms,
 * key_aliases, the policy, request_id and ticket, the settings, when the call
 * started, the Pacific day.
 * Returns the verdict, the model it is for and the rounds taken. Raises what
 * acquire_on raises.
 * Example: select * from google_ai_internal.acquire_along_chain(m, array['gemma-3-27b'], 1,
 *              null, 100, true, 5000, null, pol, 'r1', null, cfg, clock_timestamp(), current_date);
 */
create or replace function google_ai_internal.acquire_along_chain(
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
    step integer := p_step;
    wait_left integer;
    yield_after integer;
    attempt record;
    first_refusal public.acquire_result;
begin
    rounds := 0;
    while step <= pg_catalog.cardinality(p_chain) loop
        served := case
            when step = 1 then p_wanted else google_ai_internal.resolve_model(p_chain[step])
        end;
        yield_after := case
            when step < pg_catalog.cardinality(p_chain) then p_policy.fallback_after_ms
        end;
        if p_waiting_since <= google_ai_internal.clock()
            - pg_catalog.make_interval(secs => yield_after / 1000.0) then
            attempt := google_ai_internal.fall_back_now(
                p_chain, step, p_tokens, p_key_aliases, p_policy, p_request_id, p_cfg, p_started,
                p_today
            );
            rounds := rounds + attempt.rounds;
            if (attempt.verdict).granted then
                delete from google_ai_internal.wait_tickets as t where t.id = p_ticket;
                verdict := attempt.verdict;
                verdict.waited_ms := pg_catalog.round(extract(epoch from
                    google_ai_internal.clock() - p_waiting_since
                ) * 1000)::integer;
                served := attempt.served;
                return;
            end if;
        end if;
        wait_left := greatest(0, p_max_wait_ms - case
            when step = p_step then 0
            else pg_catalog.round(extract(epoch from pg_catalog.clock_timestamp() - p_started) * 1000)
        end)::integer;
        attempt := google_ai_internal.acquire_within_budget(
            served, p_tokens, p_waiting and (wait_left > 0 or p_ticket is not null), wait_left,
            p_key_aliases, p_policy.caller, p_request_id, p_ticket, p_cfg, p_started, p_policy,
            yield_after, p_today
        );
        verdict := attempt.verdict;
        rounds := rounds + attempt.rounds;
        exit when verdict.granted or verdict.reason = 'queued';
        if first_refusal.reason is null then
            first_refusal := verdict;
        end if;
        step := step + 1;
    end loop;
    if not verdict.granted and verdict.reason <> 'queued' then
        verdict := first_refusal;
        served := p_wanted;
    end if;
end;
$$;

revoke all on function google_ai_internal.acquire_along_chain(
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
 *
 * Returns one acquire_result row. A refusal is a row with granted = false and
 * reason in (rpm, tpm, rpd, cooldown, no_key, wait_timeout, caller_budget,
 * queued), never an exception, so its audit row is kept. `model` is the API
 * id of the model served, which a fallback may have changed.
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
 * Raises: LL001 unknown model, LL002 bad tokens, LL003 tokens > TPM,
 *         LL004 unknown mode, LL007 bad max_wait_ms or text too long.
 * Example: select * from public.acquire('gemma-3-27b', 1200, 'WAIT', 30000,
 *                                       array['bot-key-1'], 'bot', 'msg-42');
 */
create or replace function public.acquire(
    model text,
    tokens integer,
    mode text default 'NO_WAIT',
    max_wait_ms integer default 0,
    key_aliases text [] default null,
    caller text default null,
    request_id text default null,
    ticket uuid default null
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
        acquire.model, tokens, mode, max_wait_ms, key_aliases, caller, request_id
    );
    policy := google_ai_internal.caller_policy(caller);
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
    from google_ai_internal.acquire_along_chain(
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
        policy.caller, request_id, key_aliases
    );
    return verdict;
end;
$$;

comment on function public.acquire(text, integer, text, integer, text [], text, text, uuid) is
'Reserve one request and `tokens` input tokens of a model on the best key (RPM/TPM over an exact sliding window, RPD per Pacific day), under the caller''s class (priority, reserves), daily budget and fallback chain. Returns a grant (model = the model served) or a refusal row; raises only on bad input. WAIT always holds a ticket (returned; made here when none is passed): while reason = ''queued'', sleep retry_after_ms and call again with it (queue_position and expected_wait_ms say where it stands). A class''s fallback_after_ms moves a long wait to a fallback that can grant now. No call lasts longer than google_ai_settings.wait_slice_ms.';

revoke all on function public.acquire(text, integer, text, integer, text [], text, text, uuid)
from public, anon, authenticated;
grant execute on function public.acquire(text, integer, text, integer, text [], text, text, uuid)
to service_role;

/*
 * usage_events: what usage_report counts, one row per event between
 * p_since and p_until: each grant (with its tokens, wait and whether a
 * fallback served it), each fold of refusals, each 429 from Google (its
 * caller is the grant's), and the day roll-ups of the detail maintenance
 * has deleted (detail_kept false).
 *
 * Parameters: p_since, p_until.
 * Returns the rows with their counts (n_requests, n_committed, n_input,
 * n_output, n_refusals, reason, n_429s, waited_ms, n_fallbacks). Raises
 * nothing.
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
    n_fallbacks integer
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
        google_ai_internal.is_fallback(r)::integer as n_fallbacks
    from public.google_ai_reservations as r
    where r.granted_at >= p_since and r.granted_at < p_until
    union all
    -- One row per fold of refusals.
    select
        f.caller, f.model, f.first_at, true,
        0, 0, 0, 0, f.refusals, f.reason, 0, null, 0
    from public.google_ai_refusals as f
    where f.first_at >= p_since and f.first_at < p_until
    union all
    -- One row per 429 from Google; its caller is the grant's.
    select
        r.caller, a.model, a.ts, r.id is not null,
        0, 0, 0, 0, 0, null, 1, null, 0
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
        null, 0
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
 * caller's class, its model or its UTC day; detail that maintenance has
 * rolled up has no caller any more ('(rolled up)').
 *
 * Parameters: p_by (caller, class, model or day), then the event's caller,
 * model, time and whether its detail is kept (a usage_events row's).
 * Returns the bucket's name. Raises nothing.
 * Example: select google_ai_internal.usage_bucket('class', 'telegram-bot', 'gemma-3-27b', now(), true);
 */
create or replace function google_ai_internal.usage_bucket(
    p_by text, p_caller text, p_model text, p_at timestamptz, p_detail_kept boolean
)
returns text
language sql
stable
set search_path = ''
as $$
    select case
        when p_by in ('caller', 'class') and not p_detail_kept then '(rolled up)'
        when p_by = 'caller' then coalesce(p_caller, '(no caller)')
        when p_by = 'class' then google_ai_internal.caller_class(p_caller)
        when p_by = 'model' then p_model
        else pg_catalog.to_char(p_at at time zone 'UTC', 'YYYY-MM-DD')
    end
$$;

revoke all on function google_ai_internal.usage_bucket(text, text, text, timestamptz, boolean)
from public, anon, authenticated;

/*
 * usage_report: requests, tokens, refusals, 429s, waits and fallbacks over a
 * period, one row per caller, model, UTC day or caller class.
 *
 * Parameters:
 *   since  start of the period (inclusive); null: 7 days before `until`
 *   until  end of the period (exclusive); null: now
 *   by     'caller' (default), 'model', 'day' (UTC, as YYYY-MM-DD) or 'class'
 *
 * Returns one row per bucket, ordered by bucket:
 *   bucket              the caller ('(no caller)' when none was given), model,
 *                       day or class; '(rolled up)' for caller and class
 *                       figures read from day roll-ups, whose caller is gone
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
 * Raises: LL007 when `by` is not one of the four, or since >= until.
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
    if usage_report.by is null or usage_report.by not in ('caller', 'model', 'day', 'class') then
        raise exception using errcode = 'LL007',
            message = pg_catalog.format('by must be caller, model, day or class, got %L',
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
            google_ai_internal.usage_bucket(usage_report.by, v.caller, v.model, v.at, v.detail_kept)
                as bucket,
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
'Requests, input/output tokens, refusals by reason, Google 429s, waits p50/p95 and fallbacks over a period, per caller, model, UTC day or caller class (ledger, folded refusals, audit records and day roll-ups).';

revoke all on function public.usage_report(timestamptz, timestamptz, text)
from public, anon, authenticated;
grant execute on function public.usage_report(timestamptz, timestamptz, text) to service_role;

/*
 * expire_leases: step 1 of run_maintenance: reservations still `reserved`
 * after their lease become `expired` (audited); they stay counted in their
 * windows.
 *
 * Parameters: p_now, the run's start.
 * Returns how many expired. Raises nothing.
 * Example: select google_ai_internal.expire_leases(now());
 */
create or replace function google_ai_internal.expire_leases(p_now timestamptz)
returns integer
language sql
volatile
set search_path = ''
as $$
    with gone as (
        update public.google_ai_reservations as r
        set status = 'expired', settled_at = p_now
        where r.status = 'reserved' and r.lease_until <= p_now
        returning r.*
    ),
    audited as (
        insert into public.google_ai_audit_records (ts, event, key_alias, model, reservation_id, details)
        select p_now, 'expired', g.key_alias, g.model, g.id,
               pg_catalog.jsonb_build_object('lease_until', g.lease_until, 'granted_at', g.granted_at,
                                             'still_counted', true)
        from gone as g
        returning 1
    )
    select count(*)::integer from audited
$$;

revoke all on function google_ai_internal.expire_leases(timestamptz) from public, anon, authenticated;

/*
 * roll_up_ledger: step 2 of run_maintenance: settled ledger rows granted
 * before p_cutoff are added into google_ai_usage_counters per key, model and
 * minute/day (minute in UTC, day in rpd_time_zone), their grant and
 * settlement events into google_ai_event_counts, then deleted.
 *
 * Parameters: p_cutoff; p_cfg; p_now, the run's start.
 * Returns how many ledger rows were rolled up. Raises nothing.
 * Example: select google_ai_internal.roll_up_ledger(now() - interval '7 days', cfg, now());
 */
create or replace function google_ai_internal.roll_up_ledger(
    p_cutoff timestamptz, p_cfg public.google_ai_settings, p_now timestamptz
)
returns integer
language plpgsql
volatile
set search_path = ''
as $$
declare
    rolled integer;
    counted jsonb;
begin
    with old_rows as (
        delete from public.google_ai_reservations as r
        where r.granted_at < p_cutoff and r.status <> 'reserved'
        returning r.*
    ),
    buckets as (
        select 'minute' as kind, o.key_alias, o.model,
               pg_catalog.date_trunc('minute', o.granted_at) as bucket_start,
               sum(o.counted_requests) as requests, sum(o.counted_tokens) as tokens
        from old_rows as o group by 2, 3, 4
        union all
        select 'day', o.key_alias, o.model,
               (o.rpd_day::timestamp at time zone p_cfg.rpd_time_zone),
               sum(o.counted_requests), sum(o.counted_tokens)
        from old_rows as o group by 2, 3, 4
    ),
    rolled as (
        insert into public.google_ai_usage_counters as c (
            api_key_id, key_alias, model, bucket_kind, bucket_start, rpm_used, tpm_used, rpd_used,
            updated_at
        )
        select
            (select k.id from public.google_ai_api_keys as k where k.key_alias = b.key_alias),
            b.key_alias, b.model, b.kind, b.bucket_start,
            case when b.kind = 'minute' then least(b.requests, 2147483647) else 0 end,
            least(b.tokens, 2147483647),
            case when b.kind = 'day' then least(b.requests, 2147483647) else 0 end,
            p_now
        from buckets as b
        on conflict (bucket_kind, key_alias, model, bucket_start) do update
        set rpm_used = least(c.rpm_used::bigint + excluded.rpm_used, 2147483647),
            tpm_used = least(c.tpm_used::bigint + excluded.tpm_used, 2147483647),
            rpd_used = least(c.rpd_used::bigint + excluded.rpd_used, 2147483647),
            updated_at = excluded.updated_at
        returning 1
    ),
    -- The ledger row is the record of its grant and of its settlement.
    events as (
        select e.day, e.event, e.key_alias, e.model, count(*) as events, sum(e.tokens) as tokens
        from (
            select (o.granted_at at time zone 'UTC')::date as day, 'granted' as event,
                   o.key_alias, o.model, o.counted_tokens as tokens
            from old_rows as o
            union all
            select (coalesce(o.settled_at, o.granted_at) at time zone 'UTC')::date, o.status,
                   o.key_alias, o.model, 0
            from old_rows as o
            where o.status in ('committed', 'released')
        ) as e
        group by 1, 2, 3, 4
    )
    -- Grouped before they become jsonb: one element per day, event, key and model.
    select
        (select count(*)::integer from old_rows),
        (select coalesce(pg_catalog.jsonb_agg(pg_catalog.to_jsonb(e.*)), '[]'::jsonb) from events as e)
    into rolled, counted;
    perform google_ai_internal.count_events(counted);
    return rolled;
end;
$$;

revoke all on function google_ai_internal.roll_up_ledger(
    timestamptz, public.google_ai_settings, timestamptz
) from public, anon, authenticated;

/*
 * trim_audit: step 3 of run_maintenance: audit records and folded refusals
 * older than p_cutoff are counted into google_ai_event_counts, then
 * deleted.
 *
 * Parameters: p_cutoff.
 * Returns the audit records and the refusal rows deleted. Raises nothing.
 * Example: select * from google_ai_internal.trim_audit(now() - interval '30 days');
 */
create or replace function google_ai_internal.trim_audit(
    p_cutoff timestamptz, out records integer, out refusals integer
)
language plpgsql
volatile
set search_path = ''
as $$
declare
    counted jsonb;
begin
    -- The append-only trigger lets this transaction's deletes through.
    perform pg_catalog.set_config('llm_limits.trimming_audit', 'on', true);
    with old_records as (
        delete from public.google_ai_audit_records as a where a.ts < p_cutoff
        returning a.ts, a.event, a.key_alias, a.model
    ),
    grouped as (
        select (o.ts at time zone 'UTC')::date as day, o.event, o.key_alias, o.model,
               count(*) as events
        from old_records as o
        group by 1, 2, 3, 4
    )
    select
        (select count(*)::integer from old_records),
        (select coalesce(pg_catalog.jsonb_agg(pg_catalog.to_jsonb(g.*)), '[]'::jsonb) from grouped as g)
    into records, counted;
    perform pg_catalog.set_config('llm_limits.trimming_audit', 'off', true);
    perform google_ai_internal.count_events(counted);

    with old_folds as (
        delete from public.google_ai_refusals as f where f.last_at < p_cutoff
        returning f.first_at, f.key_alias, f.model, f.refusals
    ),
    grouped as (
        select (o.first_at at time zone 'UTC')::date as day, 'refused' as event, o.key_alias,
               o.model, sum(o.refusals) as events
        from old_folds as o
        group by 1, 2, 3, 4
    )
    select
        (select count(*)::integer from old_folds),
        (select coalesce(pg_catalog.jsonb_agg(pg_catalog.to_jsonb(g.*)), '[]'::jsonb) from grouped as g)
    into refusals, counted;
    perform google_ai_internal.count_events(counted);
end;
$$;

revoke all on function google_ai_internal.trim_audit(timestamptz) from public, anon, authenticated;

/*
 * log_maintenance: the google_ai_maintenance_log row of a run, built through
 * jsonb_populate_record so that the legacy column types of this adopted
 * table (text or text[], json or jsonb) are whatever they are.
 *
 * Parameters: p_started; p_deleted (rows deleted in all); p_details.
 * Returns the row as jsonb. Raises nothing.
 * Example: select google_ai_internal.log_maintenance(now(), 0, '{}');
 */
create or replace function google_ai_internal.log_maintenance(
    p_started timestamptz, p_deleted integer, p_details jsonb
)
returns jsonb
language sql
volatile
set search_path = ''
as $$
    insert into public.google_ai_maintenance_log (
        operation, tables_affected, deleted_count, started_at, completed_at, status, details
    )
    select
        p.operation, p.tables_affected, p.deleted_count, p.started_at, p.completed_at,
        p.status, p.details
    from pg_catalog.jsonb_populate_record(
        null::public.google_ai_maintenance_log,
        pg_catalog.jsonb_build_object(
            'operation', 'run_maintenance',
            'tables_affected', pg_catalog.to_jsonb(array[
                'google_ai_reservations', 'google_ai_usage_counters', 'google_ai_audit_records',
                'google_ai_refusals', 'google_ai_event_counts', 'google_ai_quota_state',
                'google_ai_maintenance_log'
            ]),
            'deleted_count', p_deleted,
            'started_at', p_started,
            'completed_at', google_ai_internal.clock(),
            'status', 'ok',
            'details', p_details
        )
    ) as p
    returning pg_catalog.to_jsonb(google_ai_maintenance_log.*)
$$;

revoke all on function google_ai_internal.log_maintenance(timestamptz, integer, jsonb)
from public, anon, authenticated;

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
 *      (the per-day counters keep their totals).
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
    delete from public.google_ai_maintenance_log as m where m.started_at < audit_cutoff;
    get diagnostics log_count = row_count;

    return google_ai_internal.log_maintenance(
        started,
        rolled_count + trimmed.records + trimmed.refusals + minute_count + log_count + state_count,
        pg_catalog.jsonb_build_object(
            'leases_expired', expired_count,
            'ledger_rows_rolled_up', rolled_count,
            'audit_rows_deleted', trimmed.records,
            'refusal_rows_deleted', trimmed.refusals,
            'minute_rollups_deleted', minute_count,
            'maintenance_rows_deleted', log_count,
            'window_rows_dropped', state_count,
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
