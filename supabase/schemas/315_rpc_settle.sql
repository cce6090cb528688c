-- settle: one settlement for every outcome of a call to Google; the carriers
-- (Python client, gateway) only hand over what came back.

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
create function public.settle(
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
