-- One settlement RPC for every outcome of a call to Google: the caller hands
-- over what Google answered (HTTP status and JSON body) or how the transport
-- failed, and settle decides what it means: commit the usage, cool down on a
-- 429, disable a rejected key, or release the grant sent or unsent; and
-- whether and when to try again. Google's error rules (QuotaFailure,
-- RetryInfo, "per-day wins", a rejected key) are read here and nowhere else,
-- so the Python client and the Edge Function only carry messages.
--
-- Learned limits: Google no longer publishes the Free-tier numbers, but a
-- 429's QuotaFailure carries the quotaValue it enforced. settle compares it
-- with the configured limit and records a difference as `limit_observed`;
-- with learn_limits = 'apply' it lowers (never raises) the group's limit.
--
-- Lock order: that of 20261129001400 (the reservation row, then its window
-- row); applying a learned limit updates the group's override row after
-- both, and nothing else waits on a limit row.

alter table public.google_ai_settings
add column learn_limits text not null default 'suggest'
check (learn_limits in ('off', 'suggest', 'apply')),
add column retry_backoff_ms integer not null default 500
check (retry_backoff_ms between 0 and 60000);

comment on column public.google_ai_settings.learn_limits is
'What a 429 whose quotaValue differs from the configured limit does: off (nothing), suggest (audit limit_observed), apply (also lower the quota group''s limit; never raises one).';
comment on column public.google_ai_settings.retry_backoff_ms is
'Pause settle() asks for before the next attempt after a 5xx, a timeout or a lost connection (jittered between half and all of it).';

-- Not valid, then validated: the check is added without blocking writers.
alter table public.google_ai_audit_records
drop constraint google_ai_audit_records_event_check,
add constraint google_ai_audit_records_event_check check (
    event in (
        'granted', 'refused', 'committed', 'released', 'rate_limited',
        'expired', 'config_changed', 'key_disabled', 'key_enabled', 'limit_observed'
    )
) not valid;
alter table public.google_ai_audit_records
validate constraint google_ai_audit_records_event_check;

/*
 * google_error: the `error` object of a Google error body, whatever carried
 * it: the REST body {"error": {...}}, a stream's [{"error": {...}}], or the
 * bare object.
 *
 * Parameters: p_body, the JSON the caller received (may be null).
 * Returns the error object, or '{}' when there is none. Raises nothing.
 * Example: select google_ai_internal.google_error('{"error": {"code": 429}}');
 */
create function google_ai_internal.google_error(p_body jsonb)
returns jsonb
language sql
immutable
set search_path = ''
as $$
    select case
        when pg_catalog.jsonb_typeof(b.body -> 'error') = 'object' then b.body -> 'error'
        when pg_catalog.jsonb_typeof(b.body) = 'object' then b.body
        else '{}'::jsonb
    end
    from (
        select case when pg_catalog.jsonb_typeof(p_body) = 'array' then p_body -> 0 else p_body end
    ) as b (body)
$$;

/*
 * error_details: the entries of an error's `details` list of one
 * google.rpc type (QuotaFailure, RetryInfo, ErrorInfo, ...).
 *
 * Parameters: p_error, google_error()'s result; p_type, the short type name.
 * Returns one jsonb per matching entry, in order. Raises nothing.
 * Example: select * from google_ai_internal.error_details(e, 'RetryInfo');
 */
create function google_ai_internal.error_details(p_error jsonb, p_type text)
returns setof jsonb
language sql
immutable
set search_path = ''
as $$
    select d.value
    from pg_catalog.jsonb_array_elements(
        case
            when pg_catalog.jsonb_typeof(p_error -> 'details') = 'array' then p_error -> 'details'
            else '[]'::jsonb
        end
    ) with ordinality as d (value, n)
    where
        pg_catalog.jsonb_typeof(d.value) = 'object'
        and d.value ->> '@type' like '%google.rpc.' || p_type
    order by d.n
$$;

/*
 * quota_violation: what a 429 says about the quota it hit.
 *
 *   quota_id: the QuotaFailure violation's quotaId; with several, a per-day
 *     one wins (it binds until the next Pacific midnight, whatever its own
 *     retryDelay says);
 *   retry_delay_ms: RetryInfo.retryDelay ("21s", "45.83s", "0s"), else the
 *     message's "Please retry in 21.5s" (or "... in 900ms"), else null;
 *     at most one day;
 *   violations: every violation, as Google sent it (for learned limits).
 *
 * Parameters: p_error, google_error()'s result.
 * Returns one row; every field may be null. Raises nothing.
 * Example: select * from google_ai_internal.quota_violation(google_ai_internal.google_error(body));
 */
create function google_ai_internal.quota_violation(
    p_error jsonb,
    out quota_id text,
    out retry_delay_ms integer,
    out violations jsonb
)
language plpgsql
immutable
set search_path = ''
as $$
declare
    delay text[];
begin
    select coalesce(pg_catalog.jsonb_agg(v.value), '[]'::jsonb)
    into violations
    from google_ai_internal.error_details(p_error, 'QuotaFailure') as f (failure)
    cross join lateral pg_catalog.jsonb_array_elements(
        case
            when pg_catalog.jsonb_typeof(f.failure -> 'violations') = 'array'
                then f.failure -> 'violations'
            else '[]'::jsonb
        end
    ) as v (value)
    where pg_catalog.jsonb_typeof(v.value) = 'object';

    select v.value ->> 'quotaId'
    into quota_id
    from pg_catalog.jsonb_array_elements(violations) with ordinality as v (value, n)
    where v.value ->> 'quotaId' <> ''
    order by (v.value ->> 'quotaId' like '%PerDay%') desc, v.n
    limit 1;

    select pg_catalog.regexp_match(r.info ->> 'retryDelay', '^\s*([0-9]+(?:\.[0-9]+)?)s\s*$')
    into delay
    from google_ai_internal.error_details(p_error, 'RetryInfo') as r (info)
    where r.info ->> 'retryDelay' ~ '^\s*[0-9]+(\.[0-9]+)?s\s*$'
    limit 1;
    if delay is not null then
        retry_delay_ms := least(86400000, pg_catalog.round(delay[1]::numeric * 1000))::integer;
        return;
    end if;
    delay := pg_catalog.regexp_match(
        coalesce(p_error ->> 'message', ''), 'retry in\s+([0-9]+(?:\.[0-9]+)?)\s*(ms|s)\M', 'i'
    );
    if delay is not null then
        retry_delay_ms := least(86400000, pg_catalog.round(
            delay[1]::numeric * case when pg_catalog.lower(delay[2]) = 'ms' then 1 else 1000 end
        ))::integer;
    end if;
end;
$$;

/*
 * key_rejection: why Google refuses the key itself, or null when the error
 * is about something else (a 403 for one model's access, a bad request). A
 * 403 "reported as leaked" is API_KEY_LEAKED; a 400 or 403 whose ErrorInfo
 * reason is API_KEY_... (API_KEY_INVALID, API_KEY_SERVICE_BLOCKED, ...) is
 * that reason; a 400 "API key not valid" without ErrorInfo is
 * API_KEY_INVALID. No call on such a key can succeed.
 *
 * Parameters: p_status, the HTTP status; p_error, google_error()'s result.
 * Returns the reason, or null. Raises nothing.
 * Example: select google_ai_internal.key_rejection(403, '{"message": "... leaked"}');
 */
create function google_ai_internal.key_rejection(p_status integer, p_error jsonb)
returns text
language sql
immutable
set search_path = ''
as $$
    select case
        when p_status = 403 and p_error ->> 'message' ilike '%reported as leaked%'
            then 'API_KEY_LEAKED'
        when p_status in (400, 403) then coalesce(
            (
                select i.info ->> 'reason'
                from google_ai_internal.error_details(p_error, 'ErrorInfo') as i (info)
                where i.info ->> 'reason' like 'API\_KEY\_%'
                limit 1
            ),
            case when p_error ->> 'message' ilike '%api key not valid%' then 'API_KEY_INVALID' end
        )
    end
$$;

/*
 * observe_limits: compare the quotaValue of each violation of a 429 with the
 * limit configured for the reservation's quota group and model (the group's
 * override, else the model's). A difference is audited as limit_observed;
 * with learn_limits = 'apply' a lower observed value becomes the group's
 * override (audited as config_changed by the table's trigger too). Limits
 * are never raised: a higher quotaValue may belong to another tier.
 *
 * The dimension comes from the quotaId: PerDay is rpd, InputTokens is tpm,
 * Requests...PerMinute is rpm; other quotas are ignored.
 *
 * Parameters: p_res, the reservation; p_violations, quota_violation's list;
 * p_cfg, the settings.
 * Returns the number of limit_observed rows written. Raises nothing.
 * Example: select google_ai_internal.observe_limits(res, v.violations, cfg);
 */
create function google_ai_internal.observe_limits(
    p_res public.google_ai_reservations,
    p_violations jsonb,
    p_cfg public.google_ai_settings
)
returns integer
language plpgsql
volatile
set search_path = ''
as $$
declare
    seen record;
    written integer := 0;
    applied boolean;
begin
    if p_cfg.learn_limits = 'off' then
        return 0;
    end if;
    for seen in
        select distinct on (d.dimension)
            d.dimension, d.quota_id, d.observed,
            case d.dimension
                when 'rpm' then coalesce(o.rpm, m.rpm::integer)
                when 'tpm' then coalesce(o.tpm, m.tpm::integer)
                else coalesce(o.rpd, m.rpd::integer)
            end as configured
        from pg_catalog.jsonb_array_elements(p_violations) as v (value)
        cross join lateral (
            select
                case
                    when v.value ->> 'quotaId' like '%PerDay%' then 'rpd'
                    when v.value ->> 'quotaId' like '%InputTokens%' then 'tpm'
                    when v.value ->> 'quotaId' ~ 'Requests.*PerMinute' then 'rpm'
                end as dimension,
                v.value ->> 'quotaId' as quota_id,
                case
                    when v.value ->> 'quotaValue' ~ '^[0-9]{1,9}$'
                        then (v.value ->> 'quotaValue')::integer
                end as observed
        ) as d
        inner join public.google_ai_model_limits as m on m.model = p_res.model
        left join public.google_ai_group_limits as o
            on o.quota_group = p_res.quota_group and o.model = p_res.model
        where d.dimension is not null and d.observed is not null
        order by d.dimension, d.observed
    loop
        continue when seen.configured is not distinct from seen.observed;
        applied := p_cfg.learn_limits = 'apply'
            and (seen.configured is null or seen.observed < seen.configured);
        if applied then
            insert into public.google_ai_group_limits as g (quota_group, model, rpm, tpm, rpd)
            values (
                p_res.quota_group, p_res.model,
                case when seen.dimension = 'rpm' then seen.observed end,
                case when seen.dimension = 'tpm' then seen.observed end,
                case when seen.dimension = 'rpd' then seen.observed end
            )
            on conflict (quota_group, model) do update
            set
                rpm = case when seen.dimension = 'rpm' then seen.observed else g.rpm end,
                tpm = case when seen.dimension = 'tpm' then seen.observed else g.tpm end,
                rpd = case when seen.dimension = 'rpd' then seen.observed else g.rpd end;
        end if;
        perform google_ai_internal.audit('limit_observed', p_res, pg_catalog.jsonb_build_object(
            'quota_group', p_res.quota_group,
            'dimension', seen.dimension,
            'quota_id', seen.quota_id,
            'observed', seen.observed,
            'configured', seen.configured,
            'learn_limits', p_cfg.learn_limits,
            'applied', applied
        ));
        written := written + 1;
    end loop;
    return written;
end;
$$;

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
 *   commit          2xx: commit_usage with usageMetadata.promptTokenCount
 *                   (the estimate when absent) and candidates + thoughts
 *                   tokens as the completion
 *   rate_limited    429: report_rate_limit with the QuotaFailure/RetryInfo
 *                   read here (a per-day violation wins); a quotaValue that
 *                   differs from the table is recorded (learn_limits)
 *   disable_key     Google refuses the key itself (key_rejection: invalid,
 *                   leaked, blocked): released as sent, the key disabled
 *                   (audited); try again on another key
 *   release_sent    5xx, 408, timeout, lost connection (retry), any other
 *                   status (no retry: the request itself is wrong), cancelled
 *   release_unsent  nothing reached Google: refunded
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
 *         error, a status outside 100..599, or an unknown transport error.
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
            perform public.release(res.id, transport_error, action = 'release_sent');
        end if;
    elsif http_status between 200 and 299 then
        action := 'commit';
        retry := false;
        usage := case
            when pg_catalog.jsonb_typeof(response) = 'array' then response -> -1 -> 'usageMetadata'
            else response -> 'usageMetadata'
        end;
        if not settled then
            perform public.commit_usage(
                res.id,
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
            violation := google_ai_internal.quota_violation(err);
            perform public.report_rate_limit(res.id, violation.quota_id, violation.retry_delay_ms);
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
                perform public.release(res.id, rejected, true);
                perform public.disable_key(res.key_alias, rejected);
            end if;
        else
            action := 'release_sent';
            retry := http_status >= 500 or http_status = 408;
            if not settled then
                perform public.release(res.id, pg_catalog.format('http %s', http_status), true);
            end if;
        end if;
    end if;
    retry_after_ms := case when retry then backoff end;
    return next;
end;
$$;

comment on function public.settle(uuid, integer, jsonb, text) is
'Settle a grant with Google''s answer (HTTP status and JSON body) or the transport failure, and say what to do next: action commit, rate_limited, disable_key, release_sent or release_unsent; retry; retry_after_ms before acquiring again. Google''s error rules live here. Idempotent.';

revoke all on function google_ai_internal.google_error(jsonb) from public, anon, authenticated;
revoke all on function google_ai_internal.error_details(jsonb, text) from public, anon, authenticated;
revoke all on function google_ai_internal.quota_violation(jsonb) from public, anon, authenticated;
revoke all on function google_ai_internal.key_rejection(integer, jsonb)
from public, anon, authenticated;
revoke all on function google_ai_internal.observe_limits(
    public.google_ai_reservations, jsonb, public.google_ai_settings
) from public, anon, authenticated;
revoke all on function public.settle(uuid, integer, jsonb, text) from public, anon, authenticated;
grant execute on function public.settle(uuid, integer, jsonb, text) to service_role;

/*
 * observed_limits: what 429s said the limits are, where that differs from the
 * table: per quota group, model and dimension, the latest observed value,
 * the configured one now, how often and when last seen, and whether it was
 * applied. From the audit stream (limit_observed), so it covers
 * audit_retention.
 *
 * Returns one row per (quota_group, model, dimension). Raises nothing.
 * Example: select * from public.observed_limits();
 */
create function public.observed_limits()
returns table (
    quota_group text,
    model text,
    dimension text,
    observed integer,
    configured integer,
    times_seen integer,
    last_seen timestamptz,
    applied boolean
)
language sql
stable
security definer
set search_path = ''
as $$
    select distinct on (a.details ->> 'quota_group', a.model, a.details ->> 'dimension')
        a.details ->> 'quota_group',
        a.model,
        a.details ->> 'dimension',
        (a.details ->> 'observed')::integer,
        case a.details ->> 'dimension'
            when 'rpm' then coalesce(o.rpm, m.rpm::integer)
            when 'tpm' then coalesce(o.tpm, m.tpm::integer)
            else coalesce(o.rpd, m.rpd::integer)
        end,
        (pg_catalog.count(*) over (
            partition by a.details ->> 'quota_group', a.model, a.details ->> 'dimension'
        ))::integer,
        a.ts,
        coalesce((a.details ->> 'applied')::boolean, false)
    from public.google_ai_audit_records as a
    left join public.google_ai_model_limits as m on m.model = a.model
    left join public.google_ai_group_limits as o
        on o.quota_group = a.details ->> 'quota_group' and o.model = a.model
    where a.event = 'limit_observed'
    order by a.details ->> 'quota_group', a.model, a.details ->> 'dimension', a.ts desc, a.id desc
$$;

comment on function public.observed_limits() is
'Limits Google reported in 429s (quotaValue) that differ from the table, latest per quota group, model and dimension, with the configured value now and whether learn_limits applied it.';

revoke all on function public.observed_limits() from public, anon, authenticated;
grant execute on function public.observed_limits() to service_role;
