-- settle turns what Google answered into the settlement and the next step:
-- commit, rate_limited (with learned limits), disable_key, release sent or
-- unsent; idempotent; bad input raises LL006/LL007 and changes nothing.
begin;
update google_ai_internal.clock_switch set steerable = true;
select plan(22);

set local "llm_limits.now" = '2026-03-01 12:00:00+00';
insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd)
values ('m', 'm-api', 30, 15000, 14400);
insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group) values
('k1', 'TEST_KEY_1', 'proj-1'),
('k2', 'TEST_KEY_2', 'proj-2'),
('k3', 'TEST_KEY_3', 'proj-3'),
('k4', 'TEST_KEY_4', 'proj-4');

create function pg_temp.grant_on(p_key text) returns uuid language sql as $$
    select a.reservation_id from public.acquire('m', 100, 'NO_WAIT', 0, array[p_key]) as a
$$;
create function pg_temp.ledger(p_id uuid) returns table (status text, requests int, tokens int)
language sql as $$
    select r.status, r.counted_requests::int, r.counted_tokens
    from public.google_ai_reservations as r where r.id = p_id
$$;

-- 200 with usage
create temp table ok as select pg_temp.grant_on('k1') as id;
select results_eq(
    $$select * from public.settle((select id from ok), 200,
        '{"usageMetadata": {"promptTokenCount": 80, "candidatesTokenCount": 15,
          "thoughtsTokenCount": 5}, "modelVersion": "m-api-001",
          "candidates": [{"finishReason": "STOP"}]}')$$,
    $$values ('commit'::text, false, null::integer)$$, '200: commit, no retry'
);
select results_eq(
    $$select * from pg_temp.ledger((select id from ok))$$, $$values ('committed'::text, 1, 80)$$,
    'the actual prompt tokens replace the estimate'
);
select is(
    (select r.completion_tokens from public.google_ai_reservations as r where r.id = (select o.id from ok as o)),
    20, 'completion counts candidates and thoughts'
);
select results_eq(
    $$select * from public.settle((select id from ok), 200, '{"usageMetadata": {"promptTokenCount": 1}}')$$,
    $$values ('commit'::text, false, null::integer)$$, 'settling again answers the same'
);
select results_eq(
    $$select * from pg_temp.ledger((select id from ok))$$, $$values ('committed'::text, 1, 80)$$,
    'and changes nothing'
);

-- 200 without usage: the estimate stays counted
create temp table nousage as select pg_temp.grant_on('k1') as id;
select is((select s.action from public.settle((select id from nousage), 200, '{}') as s), 'commit', '200 without usage');
select results_eq(
    $$select * from pg_temp.ledger((select id from nousage))$$, $$values ('committed'::text, 1, 100)$$,
    'the estimate stays counted'
);

-- 429 per day with retryDelay "0s", and a quotaValue that differs
update public.google_ai_settings set learn_limits = 'suggest';
create temp table day as select pg_temp.grant_on('k1') as id;
select results_eq(
    $$select * from public.settle((select id from day), 429,
        '{"error": {"code": 429, "details": [
          {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
            {"quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier", "quotaValue": "14000"}]},
          {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0s"}]}}')$$,
    $$values ('rate_limited'::text, true, 0)$$, '429: rate_limited, retry after acquiring again'
);
select is(
    (select s.cooldown_until from public.google_ai_quota_state as s
     where s.quota_group = 'proj-1' and s.model = 'm'),
    '2026-03-02 08:00:00+00'::timestamptz, 'a per-day 429 cools down until Pacific midnight'
);
select results_eq(
    $$select o.quota_group, o.dimension, o.observed, o.configured, o.applied
      from public.observed_limits() as o$$,
    $$values ('proj-1'::text, 'rpd'::text, 14000, 14400, false)$$,
    'the observed limit is recorded (learn_limits = suggest)'
);

-- learn_limits = apply lowers the group's limit, never raises it
update public.google_ai_settings set learn_limits = 'apply';
create temp table changes_before as
select count(*)::int as n from public.google_ai_audit_records as a
where a.event = 'config_changed' and a.details ->> 'table' = 'google_ai_group_limits';
create temp table minute as select pg_temp.grant_on('k2') as id;
select is(
    (select s.action from public.settle((select id from minute), 429,
        '{"error": {"code": 429, "details": [
          {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
            {"quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier", "quotaValue": "15"},
            {"quotaId": "GenerateContentInputTokensPerModelPerMinute-FreeTier", "quotaValue": "99999"}]}]}}') as s),
    'rate_limited', 'a 429 with two quota values'
);
select results_eq(
    $$select g.rpm, g.tpm, g.rpd from public.google_ai_group_limits as g
      where g.quota_group = 'proj-2' and g.model = 'm'$$,
    $$values (15, null::integer, null::integer)$$,
    'apply lowers rpm to the observed 15 and leaves the higher tpm alone'
);
select is(
    (select count(*)::int from public.google_ai_audit_records as a
     where a.event = 'config_changed' and a.details ->> 'table' = 'google_ai_group_limits')
    - (select b.n from changes_before as b),
    1, 'the change is audited as a config change'
);

-- a rejected key
create temp table bad as select pg_temp.grant_on('k3') as id;
select results_eq(
    $$select * from public.settle((select id from bad), 400,
        '{"error": {"code": 400, "message": "API key not valid.", "details": [
          {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]}}')$$,
    $$values ('disable_key'::text, true, 0)$$, '400 API_KEY_INVALID: disable_key, retry on another key'
);
select results_eq(
    $$select k.is_active, k.disabled_reason from public.google_ai_api_keys as k where k.key_alias = 'k3'$$,
    $$values (false, 'API_KEY_INVALID'::text)$$, 'the key is disabled with the reason'
);

-- 5xx, a permanent 4xx, transport failures
create temp table s500 as select pg_temp.grant_on('k4') as id;
select results_eq(
    $$select s.action, s.retry, s.retry_after_ms between 250 and 500
      from public.settle((select id from s500), 503, '{"error": {"code": 503}}') as s$$,
    $$values ('release_sent'::text, true, true)$$, '503: released as sent, retry after a jittered backoff'
);
select results_eq(
    $$select * from pg_temp.ledger((select id from s500))$$, $$values ('released'::text, 1, 100)$$,
    'a sent release stays counted'
);
create temp table s400 as select pg_temp.grant_on('k4') as id;
select results_eq(
    $$select * from public.settle((select id from s400), 400, '{"error": {"code": 400, "message": "JSON mode is not enabled"}}')$$,
    $$values ('release_sent'::text, false, null::integer)$$, 'a bad request: no retry'
);
create temp table unsent as select pg_temp.grant_on('k4') as id;
select results_eq(
    $$select s.action, s.retry from public.settle((select id from unsent), null, null, 'connect_failed') as s$$,
    $$values ('release_unsent'::text, true)$$, 'connect_failed: refunded, retry'
);
select results_eq(
    $$select * from pg_temp.ledger((select id from unsent))$$, $$values ('released'::text, 0, 0)$$,
    'an unsent release is refunded'
);

select throws_ok(
    $$select * from public.settle((select id from s400), null, null, 'gremlins')$$, 'LL007', null,
    'an unknown transport error is bad input'
);
select throws_ok(
    $$select * from public.settle(gen_random_uuid(), 200)$$, 'LL006', null,
    'an unknown reservation raises LL006'
);

select * from finish();
rollback;
