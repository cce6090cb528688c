-- A waiter behind others, once due, waits in the database for its own turn
-- as well as for the call of the one ahead (await_turn), and a ticket's first
-- call that is due is told to call back at once rather than after one
-- wait_recheck_ms.
--
-- In a window whose slots free a few milliseconds apart (the grants of a
-- burst leaving it), each grant used to follow the call before it: the
-- waiter behind waited for the head's call to end, or, when the head was
-- between calls, came back a wait_recheck_ms later. Now each due waiter
-- wakes at its own slot and the window, with room for it and those ahead,
-- serves it side by side with them (try_backfill's rule, unchanged). Grant
-- lag after a window slot frees (bench, 8 WAIT callers, 10 s windows),
-- interleaved on fresh databases, p50 / p95: before 15.9 / 24.8, 15.3 / 29.4,
-- 14.9 / 31.2, 11.5 / 20.1 ms; after 3.8 / 9.7, 5.5 / 18.1, 5.1 / 11.0,
-- 7.3 / 18.0, 6.0 / 13.6 ms.

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
create function google_ai_internal.await_turn(
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
 * policy, the settings, the one ahead's ticket id, how many are ahead and their tokens, the ms left
 * until the deadline, whether this call may stay, the end of its slice.
 * Returns the verdict (queued or wait_timeout, retry_after_ms when the turn
 * can come, expected_wait_ms when it is expected), the turn, the hint and
 * whether the call is done.
 * Raises nothing.
 * Example: select * from google_ai_internal.turn_behind(m, cands, 100, pol, cfg, pred_id, 2, 200,
 *              5000, true, clock_timestamp() + interval '2 s');
 */
create or replace function google_ai_internal.turn_behind(
    p_model public.google_ai_model_limits,
    p_cands google_ai_internal.candidate [],
    p_tokens integer,
    p_policy google_ai_internal.caller_policy,
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
    estimate record;
begin
    select t.* into pred from google_ai_internal.wait_tickets as t where t.id = p_pred;
    done := true;
    estimate := google_ai_internal.turn_estimate(
        p_model, p_cands, p_ahead, p_ahead_tokens, p_tokens, p_policy, p_cfg
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
    google_ai_internal.caller_policy, public.google_ai_settings, uuid, integer, bigint, double precision, boolean, timestamptz
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
                p_model, line.cands, p_tokens, p_policy, p_cfg, line.nearest, line.ahead,
                line.ahead_tokens, remaining_ms, not placed.fresh, slice_end
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
