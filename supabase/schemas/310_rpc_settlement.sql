-- The steps of settling a reservation, each called by settle
-- (315_rpc_settle.sql), the one RPC that settles: commit_reservation (the
-- call succeeded), release_reservation (it failed or never ran; acquire
-- also releases a grant a caller's budget cannot pay), record_rate_limit
-- (Google said 429 anyway). Each takes the reservation its caller locked
-- and found unsettled: settle alone decides whether a settlement is a
-- repeat. Lock order (220_window_protocol.sql): the reservation row first,
-- then its window row.

/*
 * audit: append one audit record about a reservation (429s, expiries).
 * Parameters: the event, the reservation row, its details (nulls stripped).
 * Returns nothing. Raises nothing of its own.
 * Example: perform google_ai_internal.audit('rate_limited', res, '{}');
 */
create or replace function google_ai_internal.audit(
    p_event text, p_res public.google_ai_reservations, p_details jsonb
)
returns void
language plpgsql
volatile
set search_path = ''
as $$
begin
    insert into public.google_ai_audit_records (ts, event, key_alias, model, reservation_id, details)
    values (
        google_ai_internal.clock(), p_event, p_res.key_alias, p_res.model, p_res.id,
        pg_catalog.jsonb_strip_nulls(p_details)
    );
end;
$$;

revoke all on function google_ai_internal.audit(text, public.google_ai_reservations, jsonb)
from public, anon, authenticated;

/*
 * record_token_usage: write the token_usage row of a committed call (the
 * bot's own usage history): its counts, and meta with key_alias,
 * reservation_id, quota_group, estimated_tokens and caller added.
 *
 * Parameters: p_res, the reservation; p_prompt_tokens and
 * p_completion_tokens, what the call used; p_meta, a JSON object of the
 * caller's fields; p_at, the commit's time.
 * Returns nothing. Raises nothing of its own.
 * Example: perform google_ai_internal.record_token_usage(res, 812, 95, '{}', now());
 */
create or replace function google_ai_internal.record_token_usage(
    p_res public.google_ai_reservations,
    p_prompt_tokens integer,
    p_completion_tokens integer,
    p_meta jsonb,
    p_at timestamptz
)
returns void
language plpgsql
volatile
set search_path = ''
set plan_cache_mode = force_generic_plan
as $$
begin
    -- Through jsonb_populate_record: the adopted table's legacy column types
    -- (request_id text or uuid, meta json or jsonb, ...) are not ours to know.
    insert into public.token_usage (
        ts, model, prompt_tokens, completion_tokens, total_tokens, request_id, meta
    )
    select u.ts, u.model, u.prompt_tokens, u.completion_tokens, u.total_tokens, u.request_id, u.meta
    from pg_catalog.jsonb_populate_record(
        null::public.token_usage,
        pg_catalog.jsonb_build_object(
            'ts', p_at,
            'model', p_res.api_model,
            'prompt_tokens', p_prompt_tokens,
            'completion_tokens', p_completion_tokens,
            'total_tokens', p_prompt_tokens + p_completion_tokens,
            'request_id', p_res.request_id,
            'meta', p_meta || pg_catalog.jsonb_build_object(
                'key_alias', p_res.key_alias,
                'reservation_id', p_res.id,
                'quota_group', p_res.quota_group,
                'estimated_tokens', p_res.estimated_tokens,
                'caller', p_res.caller
            )
        )
    ) as u;
end;
$$;

revoke all on function google_ai_internal.record_token_usage(
    public.google_ai_reservations, integer, integer, jsonb, timestamptz
) from public, anon, authenticated;

/*
 * commit_reservation: the call succeeded; record what it really used.
 *
 * Replaces the estimate with the actual input tokens in the reservation's
 * original slot of the window (freeing or taking tokens at once) and writes
 * one token_usage row. The ledger row is the record of the commit
 * (google_ai_audit_log shows it as `committed`). A late commit of an
 * expired reservation is accepted.
 *
 * Parameters: p_res, the reservation locked by lock_reservation, still
 * reserved or expired; p_prompt_tokens, the actual input tokens;
 * p_completion_tokens, the output (candidates and thoughts) tokens; p_meta,
 * a JSON object for token_usage.meta (model version, finish reason).
 * Returns nothing.
 * Raises: LL002 negative token counts or a sum past 2^31, LL007 meta larger
 *         than 16 kB (nothing is changed).
 * Example: perform google_ai_internal.commit_reservation(res, 812, 95, '{"finish_reason":"STOP"}');
 */
create or replace function google_ai_internal.commit_reservation(
    p_res public.google_ai_reservations,
    p_prompt_tokens integer,
    p_completion_tokens integer,
    p_meta jsonb
)
returns void
language plpgsql
volatile
set search_path = ''
set plan_cache_mode = force_generic_plan
as $$
declare
    at_now timestamptz := google_ai_internal.clock();
begin
    if p_prompt_tokens is null or p_prompt_tokens < 0
       or p_completion_tokens is null or p_completion_tokens < 0
       -- token_usage.total_tokens is an integer: the sum must fit too.
       or p_prompt_tokens::bigint + p_completion_tokens > 2147483647 then
        raise exception using errcode = 'LL002',
            message = pg_catalog.format(
                'prompt and completion tokens must be non-negative with a sum below 2^31, got %s and %s',
                coalesce(p_prompt_tokens::text, 'null'), coalesce(p_completion_tokens::text, 'null')),
            hint = 'Google''s usageMetadata token counts are out of range.';
    end if;
    if pg_catalog.octet_length(p_meta::text) > 16384 then
        raise exception using errcode = 'LL007', message = 'meta is larger than 16 kB',
            hint = 'The response''s modelVersion or finishReason is too long to record.';
    end if;

    -- No indexed column changes: a HOT update on the row's own page.
    update public.google_ai_reservations as r
    set
        status = 'committed',
        actual_tokens = p_prompt_tokens,
        completion_tokens = p_completion_tokens,
        counted_tokens = p_prompt_tokens,
        settled_at = at_now
    where r.id = p_res.id;
    perform google_ai_internal.record_token_usage(
        p_res, p_prompt_tokens, p_completion_tokens, p_meta, at_now
    );
    -- Last, so the shared window row stays locked only until commit.
    perform google_ai_internal.recount(p_res, p_res.counted_requests, p_prompt_tokens);
end;
$$;

revoke all on function google_ai_internal.commit_reservation(
    public.google_ai_reservations, integer, integer, jsonb
) from public, anon, authenticated;

/*
 * release_reservation: the call did not complete.
 *
 *   p_sent = false  it never reached Google: refund the request and the
 *                   tokens (in the window and in the day);
 *   p_sent = true   it may have reached Google (timeout, 5xx): keep it
 *                   counted.
 *
 * The ledger row records the release (reason and previous status in
 * details.released).
 *
 * Parameters: p_res, the reservation locked by lock_reservation, still
 * reserved or expired; p_reason, why (a transport error, `http 503`, a key
 * rejection, caller_budget); p_sent (null counts as false).
 * Returns nothing. Raises nothing of its own.
 * Example: perform google_ai_internal.release_reservation(res, 'timeout', true);
 */
create or replace function google_ai_internal.release_reservation(
    p_res public.google_ai_reservations, p_reason text, p_sent boolean
)
returns void
language plpgsql
volatile
set search_path = ''
as $$
declare
    refund boolean := not coalesce(p_sent, false);
begin
    update public.google_ai_reservations as r
    set
        status = 'released',
        counted_requests = case when refund then 0 else r.counted_requests end,
        counted_tokens = case when refund then 0 else r.counted_tokens end,
        settled_at = google_ai_internal.clock(),
        details = coalesce(r.details, '{}'::jsonb) || pg_catalog.jsonb_build_object(
            'released', pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
                'reason', p_reason, 'previous_status', p_res.status
            ))
        )
    where r.id = p_res.id;
    if refund then
        perform google_ai_internal.recount(p_res, 0::smallint, 0);
    end if;
end;
$$;

revoke all on function google_ai_internal.release_reservation(
    public.google_ai_reservations, text, boolean
) from public, anon, authenticated;

/*
 * record_rate_limit: Google answered 429 despite our accounting.
 *
 * The call stays counted (status rate_limited). The reservation's (group,
 * model) cools down until now + p_retry_delay_ms (default
 * google_ai_settings.default_cooldown_ms), or until the next midnight of
 * the quota day when p_quota_id names a per-day quota. A cooldown is only
 * ever extended. Audited as `rate_limited`.
 *
 * Parameters: p_res, the reservation locked by lock_reservation, still
 * reserved or expired; p_quota_id and p_retry_delay_ms, as quota_violation
 * read them from the 429 (either may be null); p_cfg, the settings.
 * Returns nothing. Raises: LL007 a quota_id longer than 300 characters.
 * Example: perform google_ai_internal.record_rate_limit(res,
 *              'GenerateRequestsPerMinutePerProjectPerModel-FreeTier', 21000, cfg);
 */
create or replace function google_ai_internal.record_rate_limit(
    p_res public.google_ai_reservations,
    p_quota_id text,
    p_retry_delay_ms integer,
    p_cfg public.google_ai_settings
)
returns void
language plpgsql
volatile
set search_path = ''
as $$
declare
    locked record;
    st public.google_ai_quota_state;
    until timestamptz;
    per_day boolean := coalesce(p_quota_id ilike '%PerDay%', false);
begin
    perform google_ai_internal.check_text('quota_id', p_quota_id, 300);
    locked := google_ai_internal.lock_window(p_res.quota_group, p_res.model, p_cfg);
    st := locked.st;
    -- A per-day violation may carry a short retryDelay; the day is what binds.
    until := case
        when per_day then google_ai_internal.next_day_start(locked.at_now, p_cfg.rpd_time_zone)
        else locked.at_now + pg_catalog.make_interval(
            secs => coalesce(p_retry_delay_ms, p_cfg.default_cooldown_ms) / 1000.0
        )
    end;
    if st.cooldown_until is null or until > st.cooldown_until then
        st.cooldown_until := until;
        st.cooldown_reason := coalesce(p_quota_id, 'rate_limited');
    end if;
    perform google_ai_internal.store_window(st);
    update public.google_ai_reservations as r
    set status = 'rate_limited', settled_at = locked.at_now
    where r.id = p_res.id;
    perform google_ai_internal.audit('rate_limited', p_res, pg_catalog.jsonb_build_object(
        'quota_id', p_quota_id,
        'retry_delay_ms', p_retry_delay_ms,
        'per_day', per_day,
        'cooldown_until', st.cooldown_until,
        'quota_group', p_res.quota_group,
        'previous_status', p_res.status
    ));
end;
$$;

revoke all on function google_ai_internal.record_rate_limit(
    public.google_ai_reservations, text, integer, public.google_ai_settings
) from public, anon, authenticated;
