-- settle reads Google's errors in one place: a 429's quota and retry delay
-- (a per-day violation wins; RetryInfo, else the message's "retry in"), and
-- whether Google refuses the key itself.
begin;
select plan(14);

create temp table body (name text primary key, b jsonb);
insert into body values
('both', $${"error": {"code": 429, "message": "quota", "details": [
    {"@type": "type.googleapis.com/google.rpc.Help", "links": []},
    {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
        {"quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier", "quotaValue": "30"},
        {"quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier", "quotaValue": "14400"}]},
    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "22.5s"}]}}$$),
('message', $${"error": {"code": 429, "message": "You exceeded your current quota.\nPlease retry in 21.5s."}}$$),
('message_ms', $${"error": {"code": 429, "message": "Please retry in 750.2ms."}}$$),
('bare', $${"message": "Resource exhausted", "status": "X"}$$),
('stream', $$[{"error": {"code": 429, "details": [
    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0s"}]}}]$$),
('invalid', $${"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.",
    "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]}}$$),
('invalid_plain', $${"error": {"code": 400, "message": "API key not valid."}}$$),
('leaked', $${"error": {"code": 403, "message": "Your API key was reported as leaked. Please use another API key."}}$$),
('denied', $${"error": {"code": 403, "message": "Permission denied"}}$$),
('service_disabled', $${"error": {"code": 403, "status": "PERMISSION_DENIED",
    "message": "Generative Language API has not been used in project 123456789 before or it is disabled.",
    "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "SERVICE_DISABLED"}]}}$$),
('json_mode', $${"error": {"code": 400, "message": "JSON mode is not enabled for models/gemma-3-27b-it"}}$$);

create function pg_temp.violation(p_name text) returns table (quota_id text, retry_delay_ms integer)
language sql as $$
    select v.quota_id, v.retry_delay_ms
    from body as b,
        google_ai_internal.quota_violation(google_ai_internal.google_error(b.b)) as v
    where b.name = p_name
$$;
create function pg_temp.rejection(p_status integer, p_name text) returns text
language sql as $$
    select google_ai_internal.key_rejection(p_status, google_ai_internal.google_error(b.b))
    from body as b where b.name = p_name
$$;

select results_eq(
    $$select * from pg_temp.violation('both')$$,
    $$values ('GenerateRequestsPerDayPerProjectPerModel-FreeTier'::text, 22500)$$,
    'a per-day violation wins over a per-minute one; RetryInfo is read'
);
select results_eq(
    $$select * from pg_temp.violation('message')$$, $$values (null::text, 21500)$$,
    'without RetryInfo, the message''s "retry in 21.5s"'
);
select results_eq(
    $$select * from pg_temp.violation('message_ms')$$, $$values (null::text, 750)$$,
    'and "retry in 750.2ms"'
);
select results_eq(
    $$select * from pg_temp.violation('bare')$$, $$values (null::text, null::integer)$$,
    'a bare 429 body says nothing'
);
select results_eq(
    $$select * from pg_temp.violation('stream')$$, $$values (null::text, 0)$$,
    'a stream''s error array is read too ("0s" is 0)'
);
select is(
    (select pg_catalog.jsonb_array_length(v.violations) from body as b,
        google_ai_internal.quota_violation(google_ai_internal.google_error(b.b)) as v
     where b.name = 'both'),
    2, 'every violation is kept for learned limits'
);
select is(pg_temp.rejection(400, 'invalid'), 'API_KEY_INVALID', 'ErrorInfo API_KEY_INVALID');
select is(pg_temp.rejection(400, 'invalid_plain'), 'API_KEY_INVALID', '"API key not valid"');
select is(pg_temp.rejection(403, 'leaked'), 'API_KEY_LEAKED', 'a leaked key');
select is(pg_temp.rejection(403, 'denied'), null, 'a 403 about something else leaves the key');
select is(
    pg_temp.rejection(403, 'service_disabled'), 'SERVICE_DISABLED',
    'the API disabled in the key''s project: no model can answer on it'
);
select is(pg_temp.rejection(400, 'json_mode'), null, 'a bad request leaves the key');
select is(google_ai_internal.google_error(null), '{}'::jsonb, 'no body is no error');
select is(google_ai_internal.google_error('"text"'), '{}'::jsonb, 'a scalar body is no error');

select * from finish();
rollback;
