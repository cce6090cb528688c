-- acquire's WAIT in short slices: no call stays in the database longer than
-- google_ai_settings.wait_slice_ms, a caller that passes a ticket keeps its
-- place in line between calls, and only the head of a queue sits in the
-- database while capacity frees. Lock order: 20261129001240_create_wait_tickets.sql.

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
create function google_ai_internal.ticket_in_call(p_ticket uuid)
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

/*
 * wait_in_line: one call of a WAIT that holds a ticket (a place in the
 * queue of its model and key set, kept between calls).
 *
 * The first call with a new ticket takes the place at the tail and, unless
 * it is granted at once, returns so that the place is committed (others
 * cannot see it before). Later calls:
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
 * request_id, max_wait_ms, the settings, and when the call started.
 * Returns the verdict (waited_ms counted from the ticket's first call) and
 * the number of looks at the queue over the whole wait. Raises nothing.
 * Example: select * from google_ai_internal.wait_in_line(
 *              gen_random_uuid(), m, null, 100, 'bot', 'r1', 5000, cfg, clock_timestamp());
 */
create function google_ai_internal.wait_in_line(
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
    deadline timestamptz := p_started + pg_catalog.make_interval(secs => p_max_wait_ms / 1000.0);
    slice_end timestamptz := p_started + pg_catalog.make_interval(
        secs => least(p_cfg.wait_slice_ms, p_max_wait_ms) / 1000.0
    );
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
            alive_until
        ) values (
            p_ticket, p_model.model, queue_keys, p_tokens, p_caller, p_request_id, at_now,
            at_now, at_now, at_now + pg_catalog.make_interval(
                secs => (p_cfg.wait_slice_ms + p_cfg.wait_ticket_grace_ms) / 1000.0
            )
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

/*
 * waiting_tickets_ahead: how many live tickets wait in the queue of
 * (model, key set) at this moment (all of them: a caller without a ticket
 * lines up behind every one).
 *
 * Parameters: a google_ai_model_limits.model name and acquire's key_aliases.
 * Returns the count. Raises nothing.
 * Example: select google_ai_internal.waiting_tickets('gemma-3-27b', array['b1']);
 */
create function google_ai_internal.waiting_tickets(p_model text, p_key_aliases text [])
returns table (ahead integer, ahead_tokens bigint)
language sql
stable
set search_path = ''
as $$
    select count(*)::integer, coalesce(sum(t.tokens), 0)::bigint
    from google_ai_internal.wait_tickets as t
    where
        t.model = p_model
        and t.key_set = google_ai_internal.queue_key_set(p_key_aliases)
        and t.alive_until > google_ai_internal.clock()
$$;

revoke all on function google_ai_internal.wait_in_line(
    uuid, public.google_ai_model_limits, text [], integer, text, text, integer,
    public.google_ai_settings, timestamptz
) from public, anon, authenticated;
revoke all on function google_ai_internal.waiting_tickets(text, text [])
from public, anon, authenticated;
revoke all on function google_ai_internal.ticket_in_call(uuid) from public, anon, authenticated;

drop function public.acquire(text, integer, text, integer, text [], text, text);

/*
 * acquire: atomically reserve one request and `tokens` input tokens of
 * `model` on the best usable key.
 *
 * Parameters:
 *   model        limits row name or API id ('gemma-3-27b' or 'gemma-3-27b-it')
 *   tokens       estimated input tokens (an upper bound; commit_usage reconciles)
 *   mode         'NO_WAIT' (one attempt) or 'WAIT' (wait for capacity, see below)
 *   max_wait_ms  the caller's whole remaining wait, 0..google_ai_settings.max_wait_cap_ms
 *   key_aliases  the keys this caller holds; null means every active key
 *   caller, request_id  free text for the audit log (<= 200 characters)
 *   ticket       optional uuid of the caller's making: its place in line,
 *                kept between calls (pass the same one until granted)
 *
 * Returns one acquire_result row. A refusal is a row with granted = false and
 * reason in (rpm, tpm, rpd, cooldown, no_key, wait_timeout, queued), never
 * an exception, so its audit row is kept.
 *
 * WAIT in slices: no call stays in the database longer than
 * google_ai_settings.wait_slice_ms (2 s by default), so a transaction pooler
 * keeps its connections for other work. Waiters of the same model and key
 * set queue FIFO.
 *   - With a ticket: the call returns a grant, a final refusal (wait_timeout
 *     at max_wait_ms, or rpd/cooldown that outlast it, or no_key), or reason
 *     'queued': not served yet, call again with the same ticket and the wait
 *     left after retry_after_ms (0 = at once; sleep without holding a
 *     connection). The place expires if the caller is more than
 *     wait_ticket_grace_ms late. Only the final verdict is audited, with the
 *     whole wait in waited_ms.
 *   - Without a ticket (psql, PostgREST, another SDK): one slice at most.
 *     It waits in the database only when no ticket holder waits in its
 *     queue, and returns a grant, or a refusal whose retry_after_ms is
 *     truthful: the binding limit (rpm, tpm, ...) when the slice ended
 *     first, wait_timeout when max_wait_ms did, or 'queued' at once with the
 *     expected turn when ticket holders wait ahead. It never waits past
 *     max_wait_ms. Calling again starts a new wait at the tail.
 *
 * Raises: LL001 unknown model, LL002 bad tokens, LL003 tokens > TPM,
 *         LL004 unknown mode, LL005 bad max_wait_ms, LL007 text too long.
 * Example: select * from public.acquire('gemma-3-27b', 1200, 'WAIT', 30000,
 *                                       array['bot-key-1'], 'bot', 'msg-42',
 *                                       'b9e1c6c2-4f64-4a4e-9d0c-3c8f0f3f6a11');
 */
create function public.acquire(
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
    wait_mode boolean;
    deadline timestamptz;
    cands google_ai_internal.candidate [];
    verdict public.acquire_result;
    in_line record;
    queued record;
    biggest_tpm integer;
    unlimited boolean;
    queue_model integer;
    queue_key integer;
    remaining_ms double precision;
    rounds integer := 0;
    queue_timed_out boolean := false;
    sliced boolean;
    old_lock_timeout text;
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
    wait_mode := pg_catalog.upper(mode) = 'WAIT';
    if max_wait_ms is null or max_wait_ms < 0 or max_wait_ms > cfg.max_wait_cap_ms then
        raise exception using errcode = 'LL005',
            message = pg_catalog.format('max_wait_ms must be between 0 and %s, got %s',
                                        cfg.max_wait_cap_ms, coalesce(max_wait_ms::text, 'null')),
            detail = 'The cap keeps a WAIT under Supabase''s 2-minute statement timeout.',
            hint = 'Wait longer by calling acquire again.';
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

    if wait_mode and ticket is not null and pg_catalog.cardinality(cands) > 0 then
        in_line := google_ai_internal.wait_in_line(
            ticket, wanted, key_aliases, tokens, caller, request_id, max_wait_ms, cfg, started
        );
        verdict := in_line.verdict;
        if verdict.reason = 'queued' then
            return verdict;  -- the wait goes on; its last call audits all of it
        end if;
        perform google_ai_internal.record_acquire_verdict(
            verdict, wanted.model, tokens, 'WAIT', max_wait_ms, in_line.rounds, caller, request_id,
            key_aliases
        );
        return verdict;
    end if;

    -- Without a ticket: one slice at most.
    deadline := started + pg_catalog.make_interval(
        secs => least(max_wait_ms, cfg.wait_slice_ms) / 1000.0
    );
    sliced := max_wait_ms > cfg.wait_slice_ms;
    wait_mode := wait_mode and max_wait_ms > 0;
    if wait_mode then
        select w.* into queued
        from google_ai_internal.waiting_tickets(wanted.model, key_aliases) as w;
        if queued.ahead > 0 and pg_catalog.cardinality(cands) > 0 then
            -- Ticket holders are in line: this caller's turn comes after theirs.
            rounds := 1;
            verdict.granted := false;
            verdict.model := coalesce(wanted.api_model, wanted.model);
            verdict.reason := 'queued';
            verdict.retry_after_ms := greatest(1, pg_catalog.ceil(extract(epoch from
                google_ai_internal.turn_estimate(
                    wanted, cands, queued.ahead, queued.ahead_tokens, tokens, cfg
                ) - google_ai_internal.clock()
            ) * 1000))::integer;
            wait_mode := false;
        else
            -- Callers without a ticket queue among themselves for this one
            -- slice on an advisory lock, which lives exactly as long as the call.
            -- The model half lets quota_status() count them per model.
            queue_model := pg_catalog.hashtext('llm_limits:' || wanted.model);
            queue_key := pg_catalog.hashtext(google_ai_internal.queue_key_set(key_aliases));
            if not pg_catalog.pg_try_advisory_xact_lock(queue_model, queue_key) then
                old_lock_timeout := pg_catalog.current_setting('lock_timeout');
                begin
                    perform pg_catalog.set_config('lock_timeout', least(
                        max_wait_ms, cfg.wait_slice_ms
                    )::text || 'ms', true);
                    perform pg_catalog.pg_advisory_xact_lock(queue_model, queue_key);
                    perform pg_catalog.set_config('lock_timeout', old_lock_timeout, true);
                exception when lock_not_available then
                    queue_timed_out := true;
                end;
                -- Keys may have changed while we queued.
                cands := array(
                    select c
                    from google_ai_internal.candidates(
                        wanted.model, key_aliases, google_ai_internal.clock(), tokens
                    ) as c
                );
            end if;
        end if;
    end if;

    loop
        exit when verdict.reason = 'queued';
        rounds := rounds + 1;
        verdict := google_ai_internal.reserve_round(
            wanted, cands, tokens, caller, request_id, cfg, wait_mode
        );
        exit when verdict.granted or not wait_mode or verdict.reason = 'no_key' or queue_timed_out;
        remaining_ms := extract(epoch from deadline - pg_catalog.clock_timestamp()) * 1000;
        if remaining_ms <= 0 then
            -- The slice ended first: the binding limit stays the reason.
            if not sliced then
                verdict.reason := 'wait_timeout';
            end if;
            exit;
        end if;
        -- Nothing but time frees a cooldown or a day: don't sit out a wait
        -- that cannot end in a grant.
        exit when verdict.reason in ('rpd', 'cooldown') and verdict.retry_after_ms > remaining_ms;
        -- Sleep until the window frees, but re-check every wait_recheck_ms to
        -- notice releases and reconciled commits.
        perform pg_catalog.pg_sleep(
            least(verdict.retry_after_ms, cfg.wait_recheck_ms, remaining_ms) / 1000.0
        );
        cands := array(
            select c
            from google_ai_internal.candidates(
                wanted.model, key_aliases, google_ai_internal.clock(), tokens
            ) as c
        );
    end loop;
    if queue_timed_out and not verdict.granted and not sliced then
        verdict.reason := 'wait_timeout';
    end if;

    verdict.waited_ms := pg_catalog.round(
        extract(epoch from pg_catalog.clock_timestamp() - started) * 1000
    )::integer;

    perform google_ai_internal.record_acquire_verdict(
        verdict, wanted.model, tokens, pg_catalog.upper(mode), max_wait_ms, rounds, caller,
        request_id, key_aliases
    );
    return verdict;
end;
$$;

comment on function public.acquire(text, integer, text, integer, text [], text, text, uuid) is
'Reserve one request and `tokens` input tokens of a model on the best key (RPM/TPM over an exact sliding window, RPD per Pacific day). Returns a grant or a refusal row; raises only on bad input (LL001-LL007). WAIT returns within google_ai_settings.wait_slice_ms: with a ticket (a uuid of the caller''s making) the caller keeps its place and calls again after retry_after_ms while reason = ''queued''; without one it gets a grant or a truthful refusal after one slice at most, never past max_wait_ms.';

revoke all on function public.acquire(text, integer, text, integer, text [], text, text, uuid)
from public, anon, authenticated;
grant execute on function public.acquire(text, integer, text, integer, text [], text, text, uuid)
to service_role;

/*
 * queue_waiters: callers waiting on this model right now (all groups and key
 * sets): every live ticket, plus the callers without a ticket inside their
 * one-slice wait (the advisory lock holder of each queue and those behind it).
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
    select (
        select count(*)::integer
        from google_ai_internal.wait_tickets as t
        where t.model = p_model and t.alive_until > google_ai_internal.clock()
    ) + (
        select count(*)::integer
        from pg_catalog.pg_locks as pl
        where
            pl.locktype = 'advisory'
            and pl.objsubid = 2
            and pl.classid::bigint = (
                pg_catalog.hashtext('llm_limits:' || p_model)::bigint & 4294967295
            )
    )
$$;

revoke all on function google_ai_internal.queue_waiters(text) from public, anon, authenticated;
