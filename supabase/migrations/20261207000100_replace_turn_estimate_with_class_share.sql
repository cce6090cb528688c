-- A paced waiter is told when it can expect its turn with the slots the
-- classes above it take counted in: as many as they were granted in the last
-- window (higher_class_grants). Its on_wait estimate was about a third of the
-- real wait while the bot was active. When it looks again still follows the
-- earliest slot that could be its, so that no slot waits for a sleeper. The
-- estimate's functions take the waiter's whole policy instead of a flag.

drop function google_ai_internal.turn_behind(
    public.google_ai_model_limits, google_ai_internal.candidate [], integer, boolean,
    public.google_ai_settings, uuid, integer, bigint, double precision, boolean, timestamptz
);
drop function google_ai_internal.turn_estimate(
    public.google_ai_model_limits, google_ai_internal.candidate [], integer, bigint, integer,
    boolean, public.google_ai_settings
);
drop function google_ai_internal.group_slots(
    google_ai_internal.candidate, text, integer, bigint, boolean, public.google_ai_settings,
    timestamptz, interval
);

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
language sql
stable
set search_path = ''
as $$
    select count(*)::integer
    from public.google_ai_reservations as r
    join public.google_ai_caller_classes as c on c.name = r.caller_class
    where r.quota_group = p_group and r.model = p_model and r.granted_at > p_now - p_hold
        and r.counted_requests = 1 and c.priority < p_priority
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
language sql
immutable
set search_path = ''
as $$
    select array(
        select greatest(
            p_slots[pg_catalog.ceil(k * pg_catalog.cardinality(p_slots)::numeric / p_wanted)::integer],
            greatest(p_now, p_paced_until - p_hold / p_rpm) + (k - 1) * (p_hold / p_rpm)
        )
        from pg_catalog.generate_series(1, p_wanted) as k
        order by k
    )
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
 * turn_estimate: the earliest moment a waiter with `p_ahead` requests
 * (`p_ahead_tokens` tokens) ahead of it in line could be granted (turn):
 * its slot is the (p_ahead + 1)-th to free across the candidate groups
 * (group_slots; the tokens ahead shared evenly between the groups); and
 * when it can expect it (told), the classes above taking their share. A release can only
 * make it sooner, which the head of the queue catches; other queues on the
 * same groups can make it later, which the waiter finds out when it calls
 * back.
 *
 * Parameters: the model, its candidates (acquire's order), the requests and
 * tokens ahead, the waiter's own tokens, its policy, the settings.
 * Returns timestamptz values on google_ai_internal.clock(). Raises nothing.
 * Example: select * from google_ai_internal.turn_estimate(m, cands, 3, 3600, 1200, pol, cfg);
 */
create or replace function google_ai_internal.turn_estimate(
    p_model public.google_ai_model_limits,
    p_cands google_ai_internal.candidate [],
    p_ahead integer,
    p_ahead_tokens bigint,
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
    groups integer;
    cand google_ai_internal.candidate;
    tried text [] := '{}';
    slots record;
    turns timestamptz [] := '{}';
    tolds timestamptz [] := '{}';
begin
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
            cand, p_model.model, p_ahead, p_ahead_tokens / groups + p_tokens, p_policy, p_cfg,
            at_now, hold
        );
        turns := turns || slots.turns;
        tolds := tolds || slots.told;
    end loop;
    turn := coalesce(
        (select s from pg_catalog.unnest(turns) as s order by s offset p_ahead limit 1), at_now + hold
    );
    told := coalesce(
        (select s from pg_catalog.unnest(tolds) as s order by s offset p_ahead limit 1), at_now + hold
    );
end;
$$;

revoke all on function google_ai_internal.turn_estimate(
    public.google_ai_model_limits, google_ai_internal.candidate [], integer, bigint, integer,
    google_ai_internal.caller_policy, public.google_ai_settings
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
    public.google_ai_model_limits, google_ai_internal.candidate [], integer,
    google_ai_internal.caller_policy, public.google_ai_settings, uuid, integer, bigint, double precision, boolean, timestamptz
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
