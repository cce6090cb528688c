-- A waiter behind others was now and then told its turn was a whole window
-- away when a slot was free: it looked at the line (who is ahead) in one
-- snapshot and read the ledger for its turn in a later one, and a grant of
-- one of those ahead that committed in between counted twice, as a waiter
-- still ahead and as a used slot. Through PgBouncer (24 WAIT callers on one
-- 30-RPM group, bench.pooler's load) a due waiter then left for a slice and
-- the grace (3 s), and the line behind it waited for it: the head of the
-- line's worst grant lag after its slot freed was 3.0-4.9 s in 5 of 8 runs.
-- turn_estimate now takes the tickets ahead (line_ahead returns them) and
-- counts those still in line in the snapshot it reads the ledger in.

drop function google_ai_internal.line_ahead(
    google_ai_internal.wait_tickets, text [], timestamptz, interval, integer
);
drop function google_ai_internal.look_at_line(
    google_ai_internal.wait_tickets, text, text [], integer, public.google_ai_settings
);
drop function google_ai_internal.turn_estimate(
    public.google_ai_model_limits, google_ai_internal.candidate [], integer, bigint, integer,
    google_ai_internal.caller_policy, public.google_ai_settings
);
drop function google_ai_internal.turn_behind(
    public.google_ai_model_limits, google_ai_internal.candidate [], integer,
    google_ai_internal.caller_policy, public.google_ai_settings, uuid, integer, bigint,
    double precision, boolean, timestamptz
);

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
