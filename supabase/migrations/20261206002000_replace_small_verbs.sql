-- Small verbs: run_maintenance's steps as functions of their own
-- (expire_leases, roll_up_ledger, trim_audit, log_maintenance), each read at
-- once; turn_estimate reads each group's slots through group_slots. And
-- backfill in the WAIT lines: a waiter behind a head that waits for tokens
-- is served when its request fits without delaying the head's grant
-- (backfill_group; line_ahead also names the head). Written from
-- supabase/schemas (240, 400).

-- line_ahead names the head too: a new row type.
drop function google_ai_internal.line_ahead(
    google_ai_internal.wait_tickets, text [], timestamptz, interval, integer
);

/*
 * group_slots: the next request slots of one candidate group for a waiter
 * with p_ahead requests ahead of it: the (p_ahead + 1) earliest moments a
 * request could be granted there, read from the ledger without locks. A
 * free slot serves now; a used one frees when its grant leaves the window,
 * and each slot serves again a whole window after it is used. None comes
 * before a cooldown or a spent day ends, nor before the group's TPM has
 * room for p_need_tokens more.
 *
 * Parameters: p_cand (the group's first key, with its limits), p_model (a
 * limits row name), p_ahead, p_need_tokens (the tokens ahead that fall to
 * this group, plus the waiter's own), the settings, p_now, p_hold.
 * Returns the slots in time order. Raises nothing.
 * Example: select google_ai_internal.group_slots(cand, 'gemma-3-27b', 3, 4800, cfg, now(),
 *              interval '61 s');
 */
create or replace function google_ai_internal.group_slots(
    p_cand google_ai_internal.candidate,
    p_model text,
    p_ahead integer,
    p_need_tokens bigint,
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
            select greatest(r.granted_at + p_hold, floor_at)
            from public.google_ai_reservations as r
            where
                r.quota_group = p_cand.quota_group and r.model = p_model
                and r.granted_at > p_now - p_hold and r.counted_requests > 0
            order by r.granted_at
            offset greatest(used.requests - p_cand.rpm, 0)
            limit p_ahead + 1 - free_now
        );
        while pg_catalog.cardinality(slots) < p_ahead + 1 loop
            slots := slots || (slots[pg_catalog.cardinality(slots) + 1 - p_cand.rpm] + p_hold);
        end loop;
    end if;
    return slots;
end;
$$;

revoke all on function google_ai_internal.group_slots(
    google_ai_internal.candidate, text, integer, bigint, public.google_ai_settings, timestamptz,
    interval
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
            cand, p_model.model, p_ahead, p_ahead_tokens / groups + p_tokens, p_cfg, at_now, hold
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
    public.google_ai_settings
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
 * request_id, max_wait_ms (used by the ticket's first call, and by tickets
 * made before the deadline was stored), the settings, when the call
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
    cands google_ai_internal.candidate [];
    line record;
    step record;
    pred google_ai_internal.wait_tickets;
    backfill text;
    remaining_ms double precision;
begin
    placed := google_ai_internal.take_place(
        p_ticket, p_model.model, google_ai_internal.queue_key_set(p_key_aliases), p_tokens,
        p_caller, p_request_id, p_max_wait_ms, p_cfg, p_policy
    );
    me := placed.ticket;
    -- The wait ends at the ticket's deadline, fixed by its first call, or
    -- sooner when this call's max_wait_ms says so (a caller that counts down
    -- its own wait, or gives up with 0).
    deadline := least(
        me.deadline, p_started + pg_catalog.make_interval(secs => p_max_wait_ms / 1000.0)
    );
    yield_at := me.created_at + pg_catalog.make_interval(secs => p_yield_after_ms / 1000.0);
    slice_end := least(
        deadline, p_started + pg_catalog.make_interval(secs => p_cfg.wait_slice_ms / 1000.0),
        case when yield_at > p_started then yield_at end
    );
    rounds := me.rounds;
    loop
        rounds := rounds + 1;
        cands := array(select c from google_ai_internal.candidates(
            p_model.model, p_key_aliases, google_ai_internal.clock(), p_tokens
        ) as c);
        line := google_ai_internal.line_ahead(
            me,
            google_ai_internal.starving_classes(
                me.model, me.key_set,
                array(select distinct c.quota_group from pg_catalog.unnest(cands) as c),
                google_ai_internal.clock(), p_cfg.aging_ms
            ),
            google_ai_internal.clock(),
            pg_catalog.make_interval(secs => p_cfg.wait_ticket_grace_ms / 1000.0),
            p_cfg.aging_ms
        );
        remaining_ms := extract(epoch from deadline - pg_catalog.clock_timestamp()) * 1000;
        if line.nearest is null then
            step := google_ai_internal.head_try(
                p_model, cands, p_tokens, p_caller, p_request_id, p_cfg, p_policy,
                me.created_at, remaining_ms, not placed.fresh, slice_end
            );
            verdict := step.verdict;
        else
            select t.* into pred from google_ai_internal.wait_tickets as t where t.id = line.head;
            backfill := google_ai_internal.backfill_group(
                pred, p_tokens, cands, p_model.model, p_cfg, google_ai_internal.clock()
            );
            if backfill is not null then
                verdict := google_ai_internal.reserve_round(
                    p_model, array(select c from pg_catalog.unnest(cands) as c
                                   where c.quota_group = backfill),
                    p_tokens, p_caller, p_request_id, p_cfg, true, p_policy, me.created_at
                );
                exit when verdict.granted;
            end if;
            select t.* into pred from google_ai_internal.wait_tickets as t where t.id = line.nearest;
            step := google_ai_internal.turn_behind(
                p_model, cands, p_tokens, p_cfg, pred, line.ahead, line.ahead_tokens,
                remaining_ms, not placed.fresh, slice_end
            );
            verdict := null;
            verdict.granted := false;
            verdict.model := coalesce(p_model.api_model, p_model.model);
            verdict.reason := step.reason;
            verdict.retry_after_ms := step.retry_after_ms;
            -- Due, and the one ahead is in a call: wait for it to end.
            if not step.done then
                perform google_ai_internal.wait_for_ticket(pred.id, slice_end);
            end if;
        end if;
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
