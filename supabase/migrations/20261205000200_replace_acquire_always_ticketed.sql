-- acquire always queues by ticket: a WAIT without one gets one made here and
-- returned, so every caller follows the same rule ("while the answer is
-- 'queued', sleep retry_after_ms and call again with the ticket"). The wait's
-- deadline is stored with the ticket at its first call, so a caller need not
-- count down its own wait, and no call stays longer than one slice, so the
-- cap on max_wait_ms (LL005) has nothing left to protect: it goes, and with it
-- the one-slice path for callers without a ticket and its advisory-lock
-- queue. max_wait_cap_ms stays in google_ai_settings, unused, so clients
-- released before this migration keep reading it; a later migration drops it.
--
-- SQLSTATEs: LL005 is no longer raised (a bad max_wait_ms is LL007).
--
-- WINDOW LOCK PROTOCOL (20261129001400's, with its step 1 now one path):
--   1. acquire in WAIT: the caller's ticket row, then (in a rolled-back
--      subtransaction) the one ahead of it; NO_WAIT takes no queue lock;
--   2. settlements: the google_ai_reservations row (lock_reservation);
--   3. one google_ai_quota_state row at a time, through lock_window.
-- No table locks; no row lock is held across pg_sleep.

alter table google_ai_internal.wait_tickets add column deadline timestamptz;

comment on column google_ai_internal.wait_tickets.deadline is
'When the wait ends (its first call''s start plus max_wait_ms). Null for tickets made before 20261205000200: their calls'' own max_wait_ms applies.';

comment on column public.google_ai_settings.max_wait_cap_ms is
'Unused since 20261205000200 (acquire no longer caps max_wait_ms); kept for clients released before it.';
comment on table public.google_ai_settings is
'Tunables of llm-limits (one row).';

-- The ticket a WAIT holds, returned so that a caller who passed none can
-- keep its place.
alter type public.acquire_result add attribute ticket uuid;

/*
 * wait_in_line: one call of a WAIT that holds a ticket (a place in the
 * queue of its model and key set, kept between calls).
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
 * made before the deadline was stored), the settings, and when the call
 * started.
 * Returns the verdict (waited_ms counted from the ticket's first call) and
 * the number of looks at the queue over the whole wait. Raises nothing.
 * Example: select * from google_ai_internal.wait_in_line(
 *              gen_random_uuid(), m, null, 100, 'bot', 'r1', 5000, cfg, clock_timestamp());
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
            alive_until, deadline
        ) values (
            p_ticket, p_model.model, queue_keys, p_tokens, p_caller, p_request_id, at_now,
            at_now, at_now, at_now + pg_catalog.make_interval(
                secs => (p_cfg.wait_slice_ms + p_cfg.wait_ticket_grace_ms) / 1000.0
            ),
            -- Real time, like every deadline here; from the insert, so waited_ms
            -- (counted from created_at) reaches max_wait_ms at the deadline.
            pg_catalog.clock_timestamp()
                + pg_catalog.make_interval(secs => p_max_wait_ms / 1000.0)
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
            t.model = me.model and t.key_set = me.key_set and t.seq < me.seq
            and t.alive_until > at_now
            and (t.due_at + grace > at_now or google_ai_internal.ticket_in_call(t.id))
        order by t.seq desc
        limit 1;
        cands := array(
            select c
            from google_ai_internal.candidates(p_model.model, p_key_aliases, at_now, p_tokens) as c
        );
        remaining_ms := extract(epoch from deadline - pg_catalog.clock_timestamp()) * 1000;

        if pred.id is null then
            verdict := google_ai_internal.reserve_round(
                p_model, cands, p_tokens, p_caller, p_request_id, p_cfg, true
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
            t.model = me.model and t.key_set = me.key_set and t.seq < me.seq
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
    public.google_ai_settings, timestamptz
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
 *   caller, request_id  free text for the audit log (<= 200 characters)
 *   ticket       the place in line a previous answer returned (null at first)
 *
 * Returns one acquire_result row. A refusal is a row with granted = false and
 * reason in (rpm, tpm, rpd, cooldown, no_key, wait_timeout, queued), never
 * an exception, so its audit row is kept.
 *
 * The one waiting rule: while reason = 'queued', sleep retry_after_ms (0 =
 * call at once) without holding a connection, then call again with the same
 * arguments and the returned ticket. A WAIT always holds a ticket (made here
 * when none is passed); its first call takes the place at the tail of the
 * queue of its model and key set (FIFO) and fixes the deadline. No call
 * stays in the database longer than google_ai_settings.wait_slice_ms, so a
 * transaction pooler keeps its connections for other work. The answer is a
 * grant, a final refusal (wait_timeout at the deadline, rpd or cooldown that
 * outlast it, no_key), or 'queued'. The place expires if the caller is more
 * than wait_ticket_grace_ms late. Only the final verdict is audited, with the
 * whole wait in waited_ms. NO_WAIT, and WAIT with max_wait_ms = 0, try once
 * and refuse with the binding limit and a truthful retry_after_ms.
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
    cands google_ai_internal.candidate [];
    verdict public.acquire_result;
    in_line record;
    biggest_tpm integer;
    unlimited boolean;
    place uuid;
begin
    -- Validate everything before touching any state.
    if acquire.model is null then
        raise exception using errcode = 'LL001', message = 'model must not be null',
            hint = 'Pass a model name such as gemma-3-27b.';
    end if;
    -- One cheap test on the hot path; check_text names the culprit.
    if greatest(
        pg_catalog.length(acquire.model), pg_catalog.length(caller), pg_catalog.length(request_id)
    ) > 200 then
        perform google_ai_internal.check_text('model', acquire.model, 200);
        perform google_ai_internal.check_text('caller', caller, 200);
        perform google_ai_internal.check_text('request_id', request_id, 200);
    end if;
    wanted := google_ai_internal.resolve_model(acquire.model);
    if tokens is null or tokens < 0 then
        raise exception using errcode = 'LL002',
            message = pg_catalog.format('tokens must be a non-negative integer, got %s',
                                        coalesce(tokens::text, 'null')),
            hint = 'Pass an upper-bound estimate of the input tokens.';
    end if;
    if mode is null or pg_catalog.upper(mode) not in ('WAIT', 'NO_WAIT') then
        raise exception using errcode = 'LL004',
            message = pg_catalog.format('unknown mode %L',
                                        pg_catalog.left(coalesce(mode, 'null'), 50)),
            hint = 'mode is WAIT or NO_WAIT.';
    end if;
    if max_wait_ms is null or max_wait_ms < 0 or max_wait_ms > 86400000 then
        raise exception using errcode = 'LL007',
            message = pg_catalog.format('max_wait_ms must be between 0 and 86400000, got %s',
                                        coalesce(max_wait_ms::text, 'null')),
            hint = 'Pass the whole wait in milliseconds (0 with NO_WAIT).';
    end if;
    if key_aliases is not null and pg_catalog.cardinality(key_aliases) > 1000 then
        raise exception using errcode = 'LL007', message = 'key_aliases has more than 1000 entries',
            hint = 'Pass only the aliases this process holds.';
    end if;

    cands := array(
        select c
        from google_ai_internal.candidates(
            wanted.model, key_aliases, google_ai_internal.clock(), tokens
        ) as c
    );
    if pg_catalog.cardinality(cands) = 0 then
        -- No candidate: either no usable key (a refusal) or a request larger
        -- than every TPM that applies (bad input: it can never be granted).
        select
            coalesce(max(coalesce(o.tpm, wanted.tpm::integer)), wanted.tpm::integer),
            coalesce(bool_or(coalesce(o.tpm, wanted.tpm::integer) is null), wanted.tpm is null)
        into biggest_tpm, unlimited
        from public.google_ai_api_keys as k
        left join public.google_ai_group_limits as o
            on o.quota_group = coalesce(k.quota_group, k.key_alias) and o.model = wanted.model
        where k.is_active is true and (key_aliases is null or k.key_alias = any(key_aliases));
        if not unlimited and tokens > biggest_tpm then
            raise exception using errcode = 'LL003',
                message = pg_catalog.format(
                    '%s tokens can never fit: the largest TPM of %s is %s',
                    tokens, wanted.model, biggest_tpm
                ),
                hint = 'Split the prompt or raise the limit for a paid-tier group.';
        end if;
    end if;

    -- A ticket holder's call with max_wait_ms = 0 ends its wait in line.
    if pg_catalog.upper(mode) = 'WAIT' and (max_wait_ms > 0 or ticket is not null)
        and pg_catalog.cardinality(cands) > 0
    then
        place := coalesce(ticket, pg_catalog.gen_random_uuid());
        in_line := google_ai_internal.wait_in_line(
            place, wanted, key_aliases, tokens, caller, request_id, max_wait_ms, cfg, started
        );
        verdict := in_line.verdict;
        verdict.ticket := place;
        if verdict.reason = 'queued' then
            return verdict;  -- the wait goes on; its last call audits all of it
        end if;
        perform google_ai_internal.record_acquire_verdict(
            verdict, wanted.model, tokens, 'WAIT', max_wait_ms, in_line.rounds, caller, request_id,
            key_aliases
        );
        return verdict;
    end if;

    -- NO_WAIT (or nothing to wait for): one try, the binding limit as the reason.
    verdict := google_ai_internal.reserve_round(
        wanted, cands, tokens, caller, request_id, cfg, false
    );
    verdict.waited_ms := pg_catalog.round(
        extract(epoch from pg_catalog.clock_timestamp() - started) * 1000
    )::integer;
    perform google_ai_internal.record_acquire_verdict(
        verdict, wanted.model, tokens, pg_catalog.upper(mode), max_wait_ms, 1, caller,
        request_id, key_aliases
    );
    return verdict;
end;
$$;

comment on function public.acquire(text, integer, text, integer, text [], text, text, uuid) is
'Reserve one request and `tokens` input tokens of a model on the best key (RPM/TPM over an exact sliding window, RPD per Pacific day). Returns a grant or a refusal row; raises only on bad input. WAIT always holds a ticket (returned; made here when none is passed): while reason = ''queued'', sleep retry_after_ms and call again with it. No call lasts longer than google_ai_settings.wait_slice_ms.';

revoke all on function public.acquire(text, integer, text, integer, text [], text, text, uuid)
from public, anon, authenticated;
grant execute on function public.acquire(text, integer, text, integer, text [], text, text, uuid)
to service_role;

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

-- The one-slice path for callers without a ticket is gone, and with it its queue.
drop function google_ai_internal.waiting_tickets(text, text []);
drop function google_ai_internal.queue_lock_key(text, text []);
