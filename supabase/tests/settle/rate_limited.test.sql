-- A 429 settles as rate_limited (record_rate_limit): the call stays counted
-- and its (group, model) cools down for retryDelay, the default cooldown,
-- or until the next Pacific midnight for a per-day quota. A later 429 only
-- ever extends the cooldown; settling the same grant again changes nothing.
begin;
-- Steering llm_limits.now/clock_skew needs the owner-only switch (rolled back with the test).
update google_ai_internal.clock_switch set steerable = true;
select plan(19);

set local "llm_limits.now" = '2026-03-01 12:00:00+00';
insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd) values
('m-minute', 'm-minute', 10, null, null),
('m-day', 'm-day', 10, null, null),
('m-default', 'm-default', 10, null, null);
insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group) values
('k1', 'TEST_KEY_1', 'proj-1'),
('k2', 'TEST_KEY_2', 'proj-2');

-- A 429 as Google sends it: a QuotaFailure violation and a RetryInfo delay.
create function pg_temp.too_many(p_quota_id text, p_retry_delay text) returns jsonb
language sql as $$
    select jsonb_build_object('error', jsonb_build_object('code', 429, 'details', jsonb_build_array(
        jsonb_build_object('@type', 'type.googleapis.com/google.rpc.QuotaFailure',
                           'violations', jsonb_build_array(jsonb_build_object('quotaId', p_quota_id))),
        jsonb_build_object('@type', 'type.googleapis.com/google.rpc.RetryInfo',
                           'retryDelay', p_retry_delay)
    )))
$$;
create function pg_temp.cooldown(p_model text) returns timestamptz language sql as $$
    select s.cooldown_until from public.google_ai_quota_state as s
    where s.quota_group = 'proj-1' and s.model = p_model
$$;

-- Three calls in flight on one group, each answered 429.
create temp table r1 as select * from public.acquire('m-minute', 100, 'NO_WAIT', 0, array['k1']);
create temp table r_shorter as select * from public.acquire('m-minute', 10, 'NO_WAIT', 0, array['k1']);
create temp table r_longer as select * from public.acquire('m-minute', 10, 'NO_WAIT', 0, array['k1']);
select results_eq(
    $$select * from public.settle((select r.reservation_id from r1 as r), 429,
        pg_temp.too_many('GenerateRequestsPerMinutePerProjectPerModel-FreeTier', '21s'))$$,
    $$values ('rate_limited'::text, true, 0)$$,
    'a 429 answers rate_limited: acquire again, it knows the cooldown'
);
select is(pg_temp.cooldown('m-minute'), '2026-03-01 12:00:21+00'::timestamptz, 'cooling down until now + retryDelay');
select results_eq(
    $$select r.status, r.counted_requests::int, r.counted_tokens
      from public.google_ai_reservations as r where r.id = (select x.reservation_id from r1 as x)$$,
    $$values ('rate_limited'::text, 1, 100)$$,
    'the call stays counted'
);
select results_eq(
    $$select s.window_requests, s.window_tokens::int, s.day_requests
      from public.google_ai_quota_state as s where s.quota_group = 'proj-1' and s.model = 'm-minute'$$,
    $$values (3, 120, 3)$$,
    'in the window and in the day'
);
select results_eq(
    $$select a.details ->> 'quota_id', (a.details ->> 'retry_delay_ms')::int, a.details ->> 'per_day'
      from public.google_ai_audit_log as a
      where a.event = 'rate_limited' and a.reservation_id = (select x.reservation_id from r1 as x)$$,
    $$values ('GenerateRequestsPerMinutePerProjectPerModel-FreeTier'::text, 21000, 'false'::text)$$,
    'audited as rate_limited with what Google said'
);

set local "llm_limits.now" = '2026-03-01 12:00:01+00';
create temp table r_cool as select * from public.acquire('m-minute', 10, 'NO_WAIT', 0, array['k1']);
select is((select r.reason from r_cool as r), 'cooldown', 'acquire refuses with reason cooldown');
select is((select r.retry_after_ms from r_cool as r), 20000, 'retry_after_ms is the rest of the retryDelay');
select is(
    (select a.key_alias from public.acquire('m-minute', 10) as a), 'k2',
    'another group is not cooling down and gets the request'
);
select is(
    (select s.action from public.settle((select r.reservation_id from r_shorter as r), 429,
        pg_temp.too_many('GenerateRequestsPerMinutePerProjectPerModel-FreeTier', '5s')) as s),
    'rate_limited', 'a second 429 with a shorter retryDelay'
);
select is(pg_temp.cooldown('m-minute'), '2026-03-01 12:00:21+00'::timestamptz, 'does not shorten the cooldown');
select is(
    (select s.action from public.settle((select r.reservation_id from r_longer as r), 429,
        pg_temp.too_many('GenerateRequestsPerMinutePerProjectPerModel-FreeTier', '30s')) as s),
    'rate_limited', 'a third with a longer one'
);
select is(pg_temp.cooldown('m-minute'), '2026-03-01 12:00:31+00'::timestamptz, 'extends it');
select is(
    (select s.action from public.settle((select r.reservation_id from r1 as r), 429,
        pg_temp.too_many('GenerateRequestsPerMinutePerProjectPerModel-FreeTier', '600s')) as s),
    'rate_limited', 'settling the first 429 again'
);
select is(pg_temp.cooldown('m-minute'), '2026-03-01 12:00:31+00'::timestamptz, 'changes nothing');
set local "llm_limits.now" = '2026-03-01 12:00:31+00';
select is(
    (select a.granted from public.acquire('m-minute', 10, 'NO_WAIT', 0, array['k1']) as a), true,
    'granted once the cooldown ends'
);

-- A per-day quota cools down until the next Pacific midnight, whatever
-- retryDelay says.
create temp table r_day as select * from public.acquire('m-day', 10, 'NO_WAIT', 0, array['k1']);
select is(
    (select s.action from public.settle((select r.reservation_id from r_day as r), 429,
        pg_temp.too_many('GenerateRequestsPerDayPerProjectPerModel-FreeTier', '5s')) as s),
    'rate_limited', 'a per-day 429'
);
create temp table r_day_refused as select * from public.acquire('m-day', 10, 'NO_WAIT', 0, array['k1']);
select results_eq(
    $$select pg_temp.cooldown('m-day'), r.reason, r.retry_after_ms from r_day_refused as r$$,
    $$values ('2026-03-02 08:00:00+00'::timestamptz, 'cooldown'::text, 71969000)$$,
    'PerDay: cooled down until midnight America/Los_Angeles (19 h 59 min 29 s away)'
);

-- No retryDelay: google_ai_settings.default_cooldown_ms.
update public.google_ai_settings set default_cooldown_ms = 45000;
create temp table r_def as select * from public.acquire('m-default', 10, 'NO_WAIT', 0, array['k1']);
select is(
    (select s.action from public.settle((select r.reservation_id from r_def as r), 429,
        '{"error": {"code": 429, "status": "RESOURCE_EXHAUSTED"}}') as s),
    'rate_limited', 'a 429 without details'
);
select results_eq(
    $$select pg_temp.cooldown('m-default'), a.retry_after_ms
      from public.acquire('m-default', 10, 'NO_WAIT', 0, array['k1']) as a$$,
    $$values ('2026-03-01 12:01:16+00'::timestamptz, 45000)$$,
    'cools down for default_cooldown_ms, and acquire waits that long'
);

select * from finish();
rollback;
