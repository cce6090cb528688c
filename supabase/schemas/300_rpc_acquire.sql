-- acquire: the one way to reserve quota, and how its verdict is recorded.

/*
 * record_acquire_verdict: record one acquire() verdict.
 *
 * A grant writes nothing here: its ledger row (written by try_reserve) is its
 * record. A refusal folds: when the newest google_ai_refusals row of the same
 * caller, model, key set (p_key_aliases, sorted; null = every key), reported
 * key and reason saw its last refusal at most refusal_fold_ms ago and began
 * less than one window ago, that row's count and last time move on (one HOT
 * update, locking only that row); otherwise a new row starts. Two callers
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
        update public.google_ai_refusals as f
        set
            refusals = f.refusals + 1,
            last_at = greatest(f.last_at, at_now),
            retry_after_ms = p_verdict.retry_after_ms,
            waited_ms = greatest(f.waited_ms, p_verdict.waited_ms)
        where
            f.id = (
                select g.id
                from public.google_ai_refusals as g
                where
                    g.fold_key = fold
                    and g.first_at > at_now - pg_catalog.make_interval(
                        secs => cfg.window_ms / 1000.0
                    )
                order by g.first_at desc
                limit 1
            )
            and f.last_at >= at_now - pg_catalog.make_interval(secs => cfg.refusal_fold_ms / 1000.0)
            -- The hash picks the row; the values decide.
            and f.model = p_model
            and f.caller is not distinct from p_caller
            and f.key_set is not distinct from wanted_set
            and f.key_alias is not distinct from p_verdict.key_alias
            and f.reason is not distinct from p_verdict.reason;
        if found then
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
            select q.model_half, q.set_half into queue_model, queue_key
            from google_ai_internal.queue_lock_key(wanted.model, key_aliases) as q;
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
