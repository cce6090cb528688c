-- Google's error bodies, read in one place: a 429's quota and retry delay
-- (a per-day violation wins), and whether Google refuses the key itself.

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

revoke all on function google_ai_internal.google_error(jsonb) from public, anon, authenticated;

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

revoke all on function google_ai_internal.error_details(jsonb, text) from public, anon, authenticated;

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

revoke all on function google_ai_internal.quota_violation(jsonb) from public, anon, authenticated;

/*
 * key_rejection: why Google refuses the key itself, or null when the error
 * is about something else (a 403 for one model's access, a bad request). A
 * 403 "reported as leaked" is API_KEY_LEAKED; a 400 or 403 whose ErrorInfo
 * reason is API_KEY_... (API_KEY_INVALID, API_KEY_SERVICE_BLOCKED, ...) is
 * that reason; a 403 SERVICE_DISABLED (the Generative Language API is off in
 * the key's project) is SERVICE_DISABLED; a 400 "API key not valid" without
 * ErrorInfo is API_KEY_INVALID. No call on such a key can succeed, for any
 * model.
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
                where
                    i.info ->> 'reason' like 'API\_KEY\_%'
                    or (p_status = 403 and i.info ->> 'reason' = 'SERVICE_DISABLED')
                limit 1
            ),
            case when p_error ->> 'message' ilike '%api key not valid%' then 'API_KEY_INVALID' end
        )
    end
$$;

revoke all on function google_ai_internal.key_rejection(integer, jsonb)
from public, anon, authenticated;
