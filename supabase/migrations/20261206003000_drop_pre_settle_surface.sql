-- One surface: settle is the one RPC that settles a grant. The RPCs kept for
-- clients released before settle leave public (no released client calls
-- them: the package is 0.1.0 and was never published): commit_usage,
-- release and report_rate_limit become google_ai_internal steps of settle
-- (commit_reservation with record_token_usage, release_reservation,
-- record_rate_limit), which acquire also uses for a grant a caller's budget
-- cannot pay. Also gone: the unused google_ai_settings.max_wait_cap_ms and
-- wait tickets without a deadline. disable_key stays, for settle and the
-- operator (service_role); supabase/roles.sql no longer grants it to the
-- client role. Written from supabase/schemas (010, 060, 140, 300, 310, 315).

-- A ticket without a deadline was made before 20261205000200; its waiter's
-- own max_wait_ms ends each call's wait. A day from now is the longest wait
-- acquire accepts, so least(deadline, call start + max_wait_ms) still ends
-- the wait where the waiter expects, and it keeps its place in line.
update google_ai_internal.wait_tickets as t
set deadline = pg_catalog.clock_timestamp() + interval '1 day'
where t.deadline is null;
alter table google_ai_internal.wait_tickets alter column deadline set not null;
comment on column google_ai_internal.wait_tickets.deadline is
'When the wait ends (its first call''s start plus max_wait_ms; a later call''s max_wait_ms can only bring it closer).';

-- Unused since 20261205000200 (acquire no longer caps max_wait_ms). Its
-- CHECK and comment go with it; earlier config_changed records keep it.
alter table public.google_ai_settings drop column max_wait_cap_ms;

comment on table public.google_ai_reservations is
'Reservation ledger: one row per grant from acquire(), settled by settle() (committed, released or rate_limited) or expired by its lease.';

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

/*
 * settle: settle a grant with what Google answered, and say what to do next.
 *
 * Parameters:
 *   reservation_id   the grant's id (acquire's reservation_id)
 *   http_status      Google's HTTP status, or null when no answer came
 *   response         Google's JSON body as received: the response on 2xx
 *                    (its usageMetadata is what counts; the rest is ignored),
 *                    the error body otherwise; null when there is none
 *   transport_error  how the exchange failed when it did not complete:
 *                      timeout          no answer in time (sent)
 *                      connection_lost  cut after sending, a stream cut mid-way (sent)
 *                      connect_failed   no connection, nothing sent (unsent)
 *                      not_sent         nothing left: the SDK refused to build the
 *                                       request, or the caller stopped first (unsent)
 *                      cancelled        the caller gave up during the call (sent)
 *                    A transport error wins over a status: a 200 stream cut
 *                    mid-way is `connection_lost`.
 *
 * Decides (the action column):
 *   commit          2xx: commit_reservation with usageMetadata.promptTokenCount
 *                   (the estimate when absent) and candidates + thoughts
 *                   tokens as the completion
 *   rate_limited    429: record_rate_limit with the QuotaFailure/RetryInfo
 *                   read here (a per-day violation wins); a quotaValue that
 *                   differs from the table is recorded (learn_limits)
 *   disable_key     Google refuses the key itself (key_rejection: invalid,
 *                   leaked, blocked, its project without the API): released
 *                   as sent, the key disabled (audited); try again on
 *                   another key
 *   release_sent    5xx, 408, timeout, lost connection (retry), any other
 *                   status (no retry: the request itself is wrong), cancelled
 *   release_unsent  nothing reached Google: refunded
 * Outages (225_outage_cooldown.sql): a sent attempt with no usable answer
 * (5xx, 408, timeout, lost connection) counts towards an outage cooldown of
 * its quota group and model; any answer from Google ends one; a probe
 * settled without one lets the next grant probe.
 *
 * Returns one row (action, retry, retry_after_ms): retry says whether another
 * attempt may succeed; retry_after_ms is how long to pause before acquiring
 * again (0 after a 429 and a disabled key: acquire itself knows the cooldown
 * and the keys left; a jittered retry_backoff_ms after a transient failure;
 * null when retry is false). Attempts are the caller's to count.
 * Idempotent: settling a settled reservation again changes nothing and
 * answers the same action.
 *
 * Raises: LL006 unknown reservation, LL007 neither status nor transport
 *         error, a status outside 100..599, or an unknown transport error;
 *         and what its steps refuse to record: LL002 token counts summing
 *         past 2^31, LL007 an over-long modelVersion, quotaId or key
 *         rejection reason.
 * Example: select * from public.settle('0d6f...'::uuid, 429,
 *     '{"error": {"code": 429, "details": [{"@type":
 *       "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "21s"}]}}');
 */
create or replace function public.settle(
    reservation_id uuid,
    http_status integer,
    response jsonb default null,
    transport_error text default null
)
returns table (action text, retry boolean, retry_after_ms integer)
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    cfg public.google_ai_settings := google_ai_internal.settings();
    res public.google_ai_reservations;
    err jsonb;
    violation record;
    rejected text;
    usage jsonb;
    backoff integer;
    settled boolean;
begin
    if http_status is null and transport_error is null then
        raise exception using errcode = 'LL007',
            message = 'settle needs http_status or transport_error',
            hint = 'Pass Google''s HTTP status, or how the call failed (timeout, connection_lost, ...).';
    end if;
    if http_status is not null and http_status not between 100 and 599 then
        raise exception using errcode = 'LL007',
            message = pg_catalog.format('http_status must be between 100 and 599, got %s', http_status),
            hint = 'Pass the HTTP status Google answered with.';
    end if;
    if transport_error is not null and transport_error not in (
        'timeout', 'connection_lost', 'connect_failed', 'not_sent', 'cancelled'
    ) then
        raise exception using errcode = 'LL007',
            message = pg_catalog.format('unknown transport_error %L',
                                        pg_catalog.left(transport_error, 50)),
            hint = 'One of timeout, connection_lost, connect_failed, not_sent, cancelled.';
    end if;

    res := google_ai_internal.lock_reservation(settle.reservation_id);
    settled := res.status not in ('reserved', 'expired');
    err := google_ai_internal.google_error(response);
    backoff := pg_catalog.round(cfg.retry_backoff_ms * (0.5 + pg_catalog.random() / 2))::integer;

    if transport_error is not null then
        action := case
            when transport_error in ('connect_failed', 'not_sent') then 'release_unsent'
            else 'release_sent'
        end;
        retry := transport_error in ('timeout', 'connection_lost', 'connect_failed');
        if not settled then
            perform google_ai_internal.release_reservation(
                res, transport_error, action = 'release_sent'
            );
        end if;
    elsif http_status between 200 and 299 then
        action := 'commit';
        retry := false;
        usage := case
            when pg_catalog.jsonb_typeof(response) = 'array' then response -> -1 -> 'usageMetadata'
            else response -> 'usageMetadata'
        end;
        if not settled then
            perform google_ai_internal.commit_reservation(
                res,
                coalesce(
                    case when usage ->> 'promptTokenCount' ~ '^[0-9]{1,9}$'
                        then (usage ->> 'promptTokenCount')::integer end,
                    res.estimated_tokens
                ),
                coalesce(
                    case when usage ->> 'candidatesTokenCount' ~ '^[0-9]{1,9}$'
                        then (usage ->> 'candidatesTokenCount')::integer end, 0
                ) + coalesce(
                    case when usage ->> 'thoughtsTokenCount' ~ '^[0-9]{1,9}$'
                        then (usage ->> 'thoughtsTokenCount')::integer end, 0
                ),
                pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
                    'model_version', response ->> 'modelVersion',
                    'finish_reason', response -> 'candidates' -> 0 ->> 'finishReason',
                    'thoughts_tokens', usage -> 'thoughtsTokenCount'
                ))
            );
        end if;
    elsif http_status = 429 then
        action := 'rate_limited';
        retry := true;
        if not settled then
            -- First: ending an outage must not end this 429's cooldown.
            perform google_ai_internal.upstream_answered(res, 'http 429', cfg);
            violation := google_ai_internal.quota_violation(err);
            perform google_ai_internal.record_rate_limit(
                res, violation.quota_id, violation.retry_delay_ms, cfg
            );
            perform google_ai_internal.observe_limits(res, violation.violations, cfg);
        end if;
        backoff := 0;
    else
        rejected := google_ai_internal.key_rejection(http_status, err);
        if rejected is not null then
            action := 'disable_key';
            retry := true;
            backoff := 0;
            if not settled then
                perform google_ai_internal.release_reservation(res, rejected, true);
                perform public.disable_key(res.key_alias, rejected);
            end if;
        else
            action := 'release_sent';
            retry := http_status >= 500 or http_status = 408;
            if not settled then
                perform google_ai_internal.release_reservation(
                    res, pg_catalog.format('http %s', http_status), true
                );
            end if;
        end if;
    end if;
    -- A failure counts towards an outage, an answer ends one (a 429's above),
    -- nothing sent or a caller gone leaves no answer to wait for.
    if not settled and action = 'release_sent' and retry then
        perform google_ai_internal.upstream_failed(
            res, coalesce(transport_error, pg_catalog.format('http %s', http_status)), cfg
        );
    elsif not settled and transport_error is null and http_status <> 429 then
        perform google_ai_internal.upstream_answered(
            res, pg_catalog.format('http %s', http_status), cfg
        );
    elsif not settled and transport_error is not null then
        perform google_ai_internal.probe_unanswered(res, cfg);
    end if;
    retry_after_ms := case when retry then backoff end;
    return next;
end;
$$;

comment on function public.settle(uuid, integer, jsonb, text) is
'Settle a grant with Google''s answer (HTTP status and JSON body) or the transport failure, and say what to do next: action commit, rate_limited, disable_key, release_sent or release_unsent; retry; retry_after_ms before acquiring again. Google''s error rules live here. Idempotent.';

revoke all on function public.settle(uuid, integer, jsonb, text) from public, anon, authenticated;
grant execute on function public.settle(uuid, integer, jsonb, text) to service_role;

/*
 * acquire_within_budget: acquire_on under the caller's daily budget for the
 * model: refused caller_budget when it is spent, and a grant counted
 * against it (refunded and refused when a concurrent grant spent it first).
 *
 * Parameters: acquire_on's, then p_today (the Pacific day).
 * Returns the verdict and the rounds it took. Raises what acquire_on raises.
 * Example: select * from google_ai_internal.acquire_within_budget(m, 100, true, 5000,
 *              null, 'bot', 'r1', null, cfg, clock_timestamp(), pol, null, current_date);
 */
create or replace function google_ai_internal.acquire_within_budget(
    p_model public.google_ai_model_limits,
    p_tokens integer,
    p_wait boolean,
    p_max_wait_ms integer,
    p_key_aliases text [],
    p_caller text,
    p_request_id text,
    p_ticket uuid,
    p_cfg public.google_ai_settings,
    p_started timestamptz,
    p_policy google_ai_internal.caller_policy,
    p_yield_after_ms integer,
    p_today date,
    out verdict public.acquire_result,
    out rounds integer
)
language plpgsql
volatile
set search_path = ''
as $$
declare
    -- Most callers have no budget: no budget row is read for them.
    budgeted boolean := p_model.model = any(p_policy.budget_models);
    attempt record;
begin
    rounds := 0;
    if budgeted and not google_ai_internal.spend_budget(
        p_caller, p_model.model, p_tokens, p_today, false
    ) then
        verdict := google_ai_internal.budget_refusal(p_model, p_cfg, p_started);
        return;
    end if;
    attempt := google_ai_internal.acquire_on(
        p_model, p_tokens, p_wait, p_max_wait_ms, p_key_aliases, p_caller, p_request_id,
        p_ticket, p_cfg, p_started, p_policy, p_yield_after_ms
    );
    verdict := attempt.verdict;
    rounds := attempt.rounds;
    if budgeted and verdict.granted and not google_ai_internal.spend_budget(
        p_caller, p_model.model, p_tokens, p_today, true
    ) then
        perform google_ai_internal.release_reservation(
            google_ai_internal.lock_reservation(verdict.reservation_id), 'caller_budget', false
        );
        verdict := google_ai_internal.budget_refusal(p_model, p_cfg, p_started);
    end if;
end;
$$;

revoke all on function google_ai_internal.acquire_within_budget(
    public.google_ai_model_limits, integer, boolean, integer, text [], text, text, uuid,
    public.google_ai_settings, timestamptz, google_ai_internal.caller_policy, integer, date
) from public, anon, authenticated;

-- Their grants and comments go with them.
drop function public.commit_usage(uuid, integer, integer, jsonb);
drop function public.release(uuid, text, boolean);
drop function public.report_rate_limit(uuid, text, integer);

-- roles.sql grants the client role only what a carrier calls; a database
-- whose roles.sql ran before this migration loses the operator's
-- disable_key and quota_status here too (the next roles.sql run would).
do $$
begin
    if exists (select from pg_catalog.pg_roles where rolname = 'llm_limits_client') then
        revoke execute on function public.disable_key(text, text) from llm_limits_client;
        revoke execute on function public.quota_status() from llm_limits_client;
    end if;
end
$$;
