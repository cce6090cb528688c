-- Every grant, refusal, commit, release and 429 shows as exactly one row of
-- the audit stream (google_ai_audit_log) with the right event, key_alias,
-- model and reservation_id; grants and settlements are read from the ledger,
-- so they write no audit record of their own.
begin;
-- Steering llm_limits.now/clock_skew needs the owner-only switch (rolled back with the test).
update google_ai_internal.clock_switch set steerable = true;
select plan(14);

set local "llm_limits.now" = '2026-03-01 12:00:00+00';
insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd)
values ('test-model', 'test-model-api', 3, 1000, 100);
insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group)
values ('k1', 'TEST_KEY_1', 'proj-1');

-- Ledger events carry ids derived from the reservation, not increasing ones:
-- "new" is "not seen at the last mark".
create temp table audit_mark as select a.id from public.google_ai_audit_log as a;
create temp view new_audit as
select a.* from public.google_ai_audit_log as a
where not exists (select from audit_mark as m where m.id = a.id);

create temp table r1 as
select * from public.acquire('test-model-api', 120, 'NO_WAIT', 0, null, 'bot', 'msg-1');
select results_eq(
    $$select a.event, a.key_alias, a.model, a.reservation_id, a.ts from new_audit as a$$,
    $$select 'granted'::text, 'k1'::text, 'test-model'::text, r.reservation_id,
             '2026-03-01 12:00:00+00'::timestamptz from r1 as r$$,
    'a grant writes one granted row (model by its limits name, even when called by API id)'
);
select results_eq(
    $$select a.details ->> 'tokens', a.details ->> 'caller', a.details ->> 'request_id',
             a.details ->> 'quota_group'
      from new_audit as a where a.event = 'granted'$$,
    $$values ('120', 'bot', 'msg-1', 'proj-1')$$,
    'the granted row records tokens, caller, request_id and the quota group'
);

create temp table r2 as select * from public.acquire('test-model', 10);
create temp table r3 as select * from public.acquire('test-model', 10);
create temp table r4 as select * from public.acquire('test-model', 10);
select is((select count(*)::int from new_audit), 4, 'four acquire calls, four audit rows');
select results_eq(
    $$select a.event, a.key_alias, a.model, a.reservation_id, a.details ->> 'reason',
             (a.details ->> 'retry_after_ms')::int
      from new_audit as a where a.event = 'refused'$$,
    $$values ('refused'::text, 'k1'::text, 'test-model'::text, null::uuid, 'rpm'::text, 61000)$$,
    'a refusal writes one refused row with the reason and retry_after_ms, no reservation'
);

truncate audit_mark;
insert into audit_mark select a.id from public.google_ai_audit_log as a;
select is(
    (select s.action from public.settle((select r.reservation_id from r1 as r), 200,
        '{"usageMetadata": {"promptTokenCount": 100, "candidatesTokenCount": 20}}') as s),
    'commit', 'commit r1'
);
select is(
    (select s.action from public.settle((select r.reservation_id from r2 as r), null, null, 'connect_failed') as s),
    'release_unsent', 'release r2'
);
select is(
    (select s.action from public.settle((select r.reservation_id from r3 as r), 429,
        '{"error": {"code": 429, "details": [
          {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{"quotaId": "SomeQuota"}]},
          {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"}]}}') as s),
    'rate_limited', 'report a 429 on r3'
);
select results_eq(
    $$select a.event, a.key_alias, a.model, a.reservation_id from new_audit as a order by a.event$$,
    $$select 'committed'::text, 'k1'::text, 'test-model'::text, r.reservation_id from r1 as r
      union all
      select 'rate_limited', 'k1', 'test-model', r.reservation_id from r3 as r
      union all
      select 'released', 'k1', 'test-model', r.reservation_id from r2 as r$$,
    'commit, release and rate_limited each write one row for their reservation'
);
select results_eq(
    $$select (a.details ->> 'prompt_tokens')::int, (a.details ->> 'estimated_tokens')::int
      from new_audit as a where a.event = 'committed'$$,
    $$values (100, 120)$$,
    'the committed row records estimate and actual'
);
select results_eq(
    $$select a.details ->> 'reason', (a.details ->> 'sent')::boolean, (a.details ->> 'refunded')::boolean
      from new_audit as a where a.event = 'released'$$,
    $$values ('connect_failed'::text, false, true)$$,
    'the released row records the reason and the refund'
);
select results_eq(
    $$select a.details ->> 'quota_id', (a.details ->> 'retry_delay_ms')::int,
             (a.details ->> 'cooldown_until')::timestamptz
      from new_audit as a where a.event = 'rate_limited'$$,
    $$values ('SomeQuota'::text, 1000, '2026-03-01 12:00:01+00'::timestamptz)$$,
    'the rate_limited row records the quota_id and the cooldown'
);

-- Idempotent repeats write nothing.
truncate audit_mark;
insert into audit_mark select a.id from public.google_ai_audit_log as a;
select is(
    (select s.action from public.settle((select r.reservation_id from r1 as r), 200,
        '{"usageMetadata": {"promptTokenCount": 100}}') as s),
    'commit', 'commit repeated'
);
select is(
    (select s.action from public.settle((select r.reservation_id from r2 as r), null, null, 'not_sent') as s),
    'release_unsent', 'release repeated'
);
select is((select count(*)::int from new_audit), 0, 'repeated settlements write no audit row');

select * from finish();
rollback;
