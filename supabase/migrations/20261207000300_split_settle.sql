-- settle reads as its steps: its input checked (check_settle_args), the
-- outcome's meaning (settle_action, the one table of it), a 2xx committed
-- (commit_answer), a 429 recorded (rate_limited_answer), and the outage
-- bookkeeping. Same behaviour; Google's error body is read only when the
-- answer is not a success.

/*
 * check_settle_args: settle's input, refused before anything is read or
 * written.
 *
 * Parameters: p_http_status, p_transport_error (as settle takes them).
 * Returns nothing. Raises LL007 when neither is given, the status is
 * outside 100..599, or the transport error is not one settle knows.
 * Example: perform google_ai_internal.check_settle_args(200, null);
 */
create function google_ai_internal.check_settle_args(
    p_http_status integer,
    p_transport_error text
)
returns void
language plpgsql
immutable
set search_path = ''
as $$
begin
    if p_http_status is null and p_transport_error is null then
        raise exception using errcode = 'LL007',
            message = 'settle needs http_status or transport_error',
            hint = 'Pass Google''s HTTP status, or how the call failed (timeout, connection_lost, ...).';
    end if;
    if p_http_status is not null and p_http_status not between 100 and 599 then
        raise exception using errcode = 'LL007',
            message = pg_catalog.format('http_status must be between 100 and 599, got %s', p_http_status),
            hint = 'Pass the HTTP status Google answered with.';
    end if;
    if p_transport_error is not null and p_transport_error not in (
        'timeout', 'connection_lost', 'connect_failed', 'not_sent', 'cancelled'
    ) then
        raise exception using errcode = 'LL007',
            message = pg_catalog.format('unknown transport_error %L',
                                        pg_catalog.left(p_transport_error, 50)),
            hint = 'One of timeout, connection_lost, connect_failed, not_sent, cancelled.';
    end if;
end;
$$;

revoke all on function google_ai_internal.check_settle_args(integer, text)
from public, anon, authenticated;

/*
 * settle_action: what an outcome of a call means, as settle's doc lists it:
 * the action, whether another attempt may succeed, and the key's rejection
 * when Google refuses the key itself. The one home of that table.
 *
 * Parameters: p_http_status, p_transport_error, p_response (as settle takes
 * them).
 * Returns (action, retry, rejected). Raises nothing.
 * Example: select * from google_ai_internal.settle_action(503, null, null);
 */
create function google_ai_internal.settle_action(
    p_http_status integer,
    p_transport_error text,
    p_response jsonb,
    out action text,
    out retry boolean,
    out rejected text
)
language plpgsql
immutable
set search_path = ''
as $$
begin
    if p_transport_error is not null then
        action := case
            when p_transport_error in ('connect_failed', 'not_sent') then 'release_unsent'
            else 'release_sent'
        end;
        retry := p_transport_error in ('timeout', 'connection_lost', 'connect_failed');
    elsif p_http_status between 200 and 299 then
        action := 'commit';
        retry := false;
    elsif p_http_status = 429 then
        action := 'rate_limited';
        retry := true;
    else
        rejected := google_ai_internal.key_rejection(
            p_http_status, google_ai_internal.google_error(p_response)
        );
        action := case when rejected is not null then 'disable_key' else 'release_sent' end;
        retry := rejected is not null or p_http_status >= 500 or p_http_status = 408;
    end if;
end;
$$;

revoke all on function google_ai_internal.settle_action(integer, text, jsonb)
from public, anon, authenticated;

/*
 * commit_answer: commit a grant with a 2xx answer: usageMetadata's
 * promptTokenCount (the estimate when absent or not a count), candidates +
 * thoughts tokens as the completion, and the model version and finish
 * reason; a stream's usage is on its last chunk.
 *
 * Parameters: p_res, the locked reservation; p_response, Google's body.
 * Returns nothing. Raises what commit_reservation raises (LL002, LL007).
 * Example: perform google_ai_internal.commit_answer(res,
 *              '{"usageMetadata": {"promptTokenCount": 12}}');
 */
create function google_ai_internal.commit_answer(
    p_res public.google_ai_reservations,
    p_response jsonb
)
returns void
language plpgsql
volatile
set search_path = ''
as $$
declare
    usage jsonb := case
        when pg_catalog.jsonb_typeof(p_response) = 'array' then p_response -> -1 -> 'usageMetadata'
        else p_response -> 'usageMetadata'
    end;
begin
    perform google_ai_internal.commit_reservation(
        p_res,
        coalesce(
            case when usage ->> 'promptTokenCount' ~ '^[0-9]{1,9}$'
                then (usage ->> 'promptTokenCount')::integer end,
            p_res.estimated_tokens
        ),
        coalesce(
            case when usage ->> 'candidatesTokenCount' ~ '^[0-9]{1,9}$'
                then (usage ->> 'candidatesTokenCount')::integer end, 0
        ) + coalesce(
            case when usage ->> 'thoughtsTokenCount' ~ '^[0-9]{1,9}$'
                then (usage ->> 'thoughtsTokenCount')::integer end, 0
        ),
        pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
            'model_version', p_response ->> 'modelVersion',
            'finish_reason', p_response -> 'candidates' -> 0 ->> 'finishReason',
            'thoughts_tokens', usage -> 'thoughtsTokenCount'
        ))
    );
end;
$$;

revoke all on function google_ai_internal.commit_answer(public.google_ai_reservations, jsonb)
from public, anon, authenticated;

/*
 * rate_limited_answer: record a 429 on a grant: the QuotaFailure/RetryInfo
 * of its body (a per-day violation wins) as the group's cooldown, and a
 * quotaValue that differs from the table (learn_limits). A 429 is an answer,
 * so it ends an outage first: ending one must not end this 429's cooldown.
 *
 * Parameters: p_res, the locked reservation; p_response, Google's body;
 * the settings.
 * Returns nothing. Raises LL007 for an over-long quotaId.
 * Example: perform google_ai_internal.rate_limited_answer(res, body, cfg);
 */
create function google_ai_internal.rate_limited_answer(
    p_res public.google_ai_reservations,
    p_response jsonb,
    p_cfg public.google_ai_settings
)
returns void
language plpgsql
volatile
set search_path = ''
as $$
declare
    violation record;
begin
    perform google_ai_internal.upstream_answered(p_res, 'http 429', p_cfg);
    violation := google_ai_internal.quota_violation(google_ai_internal.google_error(p_response));
    perform google_ai_internal.record_rate_limit(
        p_res, violation.quota_id, violation.retry_delay_ms, p_cfg
    );
    perform google_ai_internal.observe_limits(p_res, violation.violations, p_cfg);
end;
$$;

revoke all on function google_ai_internal.rate_limited_answer(
    public.google_ai_reservations, jsonb, public.google_ai_settings
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
    outcome record;
    what text := coalesce(transport_error, pg_catalog.format('http %s', http_status));
begin
    perform google_ai_internal.check_settle_args(http_status, transport_error);
    res := google_ai_internal.lock_reservation(settle.reservation_id);
    outcome := google_ai_internal.settle_action(http_status, transport_error, response);
    action := outcome.action;
    retry := outcome.retry;

    if res.status in ('reserved', 'expired') then  -- not settled yet
        case action
            when 'commit' then
                perform google_ai_internal.commit_answer(res, response);
            when 'rate_limited' then
                perform google_ai_internal.rate_limited_answer(res, response, cfg);
            when 'disable_key' then
                perform google_ai_internal.release_reservation(res, outcome.rejected, true);
                perform public.disable_key(res.key_alias, outcome.rejected);
            else
                perform google_ai_internal.release_reservation(res, what, action = 'release_sent');
        end case;
        -- A failure counts towards an outage, an answer ends one (a 429's is
        -- ended first, above), nothing sent or a caller gone leaves no answer
        -- to wait for.
        if action = 'release_sent' and retry then
            perform google_ai_internal.upstream_failed(res, what, cfg);
        elsif transport_error is null and http_status <> 429 then
            perform google_ai_internal.upstream_answered(res, what, cfg);
        elsif transport_error is not null then
            perform google_ai_internal.probe_unanswered(res, cfg);
        end if;
    end if;
    -- 0 after a 429 or a disabled key: acquire itself knows the cooldown and the keys left.
    retry_after_ms := case
        when not retry then null
        when action in ('rate_limited', 'disable_key') then 0
        else pg_catalog.round(cfg.retry_backoff_ms * (0.5 + pg_catalog.random() / 2))::integer
    end;
    return next;
end;
$$;
