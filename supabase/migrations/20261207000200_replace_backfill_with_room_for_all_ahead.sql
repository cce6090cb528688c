-- A waiter behind others is served now when a group has room for every
-- request ahead of it and its own (backfill_group): when many slots free at
-- once (a window's first burst leaving it), the waiters take them side by
-- side instead of one after another, each behind the previous one's call.

drop function google_ai_internal.try_backfill(
    uuid, google_ai_internal.candidate [], public.google_ai_model_limits, integer, text, text,
    public.google_ai_settings, google_ai_internal.caller_policy, timestamptz
);
drop function google_ai_internal.backfill_group(
    google_ai_internal.wait_tickets, integer, google_ai_internal.candidate [], text,
    public.google_ai_settings, timestamptz
);

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
 * try_backfill: one try for a waiter behind others, when backfill_group
 * says its request fits now without delaying the head (p_head) of its line:
 * reserve_round on that group only. Never past a head of a better class:
 * a class is not served while one above it waits in its line.
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
    if head.priority < p_policy.priority then
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
                line.head, line.ahead, line.ahead_tokens, line.cands, p_model, p_tokens, p_caller, p_request_id, p_cfg, p_policy,
                me.created_at
            );
            exit when verdict.granted;
            step := google_ai_internal.turn_behind(
                p_model, line.cands, p_tokens, p_policy, p_cfg, line.nearest, line.ahead,
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
