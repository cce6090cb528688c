-- acquire's audit row gets a function of its own, so that how a verdict is
-- recorded (what is written, what is folded) can change without redefining
-- acquire, and acquire's waiting can change without touching the audit.

/*
 * record_acquire_verdict: append the audit row of one acquire() verdict.
 *
 * Parameters: the verdict, the resolved model, and acquire's own arguments
 * (mode already upper-cased) plus the number of reservation rounds it ran.
 * Returns nothing. Raises nothing of its own.
 * Example: perform google_ai_internal.record_acquire_verdict(
 *              verdict, 'gemma-3-27b', 1200, 'WAIT', 30000, 3, 'bot', 'msg-42');
 */
create function google_ai_internal.record_acquire_verdict(
    p_verdict public.acquire_result,
    p_model text,
    p_tokens integer,
    p_mode text,
    p_max_wait_ms integer,
    p_rounds integer,
    p_caller text,
    p_request_id text
)
returns void
language plpgsql
volatile
set search_path = ''
as $$
begin
    insert into public.google_ai_audit_log (ts, event, key_alias, model, reservation_id, details)
    values (
        google_ai_internal.clock(),
        case when p_verdict.granted then 'granted' else 'refused' end,
        p_verdict.key_alias,
        p_model,
        p_verdict.reservation_id,
        pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
            'tokens', p_tokens,
            'mode', p_mode,
            'max_wait_ms', p_max_wait_ms,
            'waited_ms', p_verdict.waited_ms,
            'rounds', p_rounds,
            'reason', p_verdict.reason,
            'retry_after_ms', p_verdict.retry_after_ms,
            'caller', p_caller,
            'request_id', p_request_id
        ))
    );
end;
$$;

revoke all on function google_ai_internal.record_acquire_verdict(
    public.acquire_result, text, integer, text, integer, integer, text, text
) from public, anon, authenticated;

/*
 * acquire: atomically reserve one request and `tokens` input tokens of
 * `model` on the best usable key.
 *
 * Parameters:
 *   model        limits row name or API id ('gemma-3-27b' or 'gemma-3-27b-it')
 *   tokens       estimated input tokens (an upper bound; commit_usage reconciles)
 *   mode         'NO_WAIT' (one attempt) or 'WAIT' (sleep until granted or max_wait_ms)
 *   max_wait_ms  WAIT budget, 0..google_ai_settings.max_wait_cap_ms (default cap 90 s)
 *   key_aliases  the keys this caller holds; null means every active key
 *   caller, request_id  free text for the audit log (<= 200 characters)
 *
 * Returns one acquire_result row. A refusal is a row with granted = false and
 * reason in (rpm, tpm, rpd, cooldown, no_key, wait_timeout), never an
 * exception, so its audit row is kept.
 *
 * Key choice: active keys in key_aliases, one per quota group (lowest
 * priority value, then alias), groups tried by priority, then by most
 * headroom; cooling-down groups last.
 *
 * WAIT: waiters of the same (model, candidate groups) form a FIFO queue on an
 * advisory lock; the lock manager hands it over in arrival order, so only the
 * head re-checks (every wait_recheck_ms at most, or exactly when the window
 * frees) and the rest sleep in the lock queue without polling.
 *
 * Raises: LL001 unknown model, LL002 bad tokens, LL003 tokens > TPM,
 *         LL004 unknown mode, LL005 bad max_wait_ms, LL007 text too long.
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
    request_id text default null
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
    biggest_tpm integer;
    unlimited boolean;
    queue_model integer;
    queue_key integer;
    remaining_ms double precision;
    rounds integer := 0;
    queue_timed_out boolean := false;
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

    deadline := started + pg_catalog.make_interval(secs => max_wait_ms / 1000.0);
    wait_mode := wait_mode and max_wait_ms > 0;
    if wait_mode then
        -- Waiters form a FIFO per (model, candidate set): the lock manager
        -- hands this advisory lock over in arrival order, so only the head
        -- re-checks and the rest sleep in the lock queue without polling.
        -- The model half lets quota_status() count waiters per model.
        queue_model := pg_catalog.hashtext('llm_limits:' || wanted.model);
        queue_key := pg_catalog.hashtext(coalesce(pg_catalog.array_to_string(array(
            select distinct a from pg_catalog.unnest(key_aliases) as a order by a
        ), ','), '*'));
        if not pg_catalog.pg_try_advisory_xact_lock(queue_model, queue_key) then
            old_lock_timeout := pg_catalog.current_setting('lock_timeout');
            begin
                perform pg_catalog.set_config('lock_timeout', max_wait_ms::text || 'ms', true);
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

    loop
        rounds := rounds + 1;
        verdict := google_ai_internal.reserve_round(
            wanted, cands, tokens, caller, request_id, cfg, wait_mode
        );
        exit when verdict.granted or not wait_mode or verdict.reason = 'no_key' or queue_timed_out;
        remaining_ms := extract(epoch from deadline - pg_catalog.clock_timestamp()) * 1000;
        if remaining_ms <= 0 then
            verdict.reason := 'wait_timeout';
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
    if queue_timed_out and not verdict.granted then
        verdict.reason := 'wait_timeout';
    end if;

    verdict.waited_ms := pg_catalog.round(
        extract(epoch from pg_catalog.clock_timestamp() - started) * 1000
    )::integer;

    perform google_ai_internal.record_acquire_verdict(
        verdict, wanted.model, tokens, pg_catalog.upper(mode), max_wait_ms, rounds, caller,
        request_id
    );
    return verdict;
end;
$$;

comment on function public.acquire(text, integer, text, integer, text [], text, text) is
'Reserve one request and `tokens` input tokens of a model on the best key (RPM/TPM over an exact sliding window, RPD per Pacific day). Returns a grant or a refusal row; raises only on bad input (LL001-LL007).';
