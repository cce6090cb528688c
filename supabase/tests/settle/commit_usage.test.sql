-- commit_usage replaces the estimate with the actual input tokens in the
-- reservation's original window slot, writes one token_usage row, and is
-- idempotent.
begin;
-- Steering llm_limits.now/clock_skew needs the owner-only switch (rolled back with the test).
update google_ai_internal.clock_switch set steerable = true;
select plan(22);

set local "llm_limits.now" = '2026-03-01 12:00:00+00';
insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd)
values ('test-model', 'test-model-api', 10, 1000, 100);
insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group)
values ('k1', 'TEST_KEY_1', 'proj-1');

create temp table r1 as
select * from public.acquire('test-model', 500, 'NO_WAIT', 0, null, 'bot', 'msg-1');
set local "llm_limits.now" = '2026-03-01 12:00:10+00';
select is(
    (select a.reason from public.acquire('test-model', 600) as a), 'tpm',
    'estimate 500 in the window: 600 more tokens are refused'
);

select is(
    public.commit_usage((select r.reservation_id from r1 as r), 100, 50, '{"finish_reason": "STOP"}'),
    true, 'commit_usage returns true when it commits'
);
create temp table r2 as select * from public.acquire('test-model', 600);
select is(
    (select r.granted from r2 as r), true,
    'actual 100: the 400 unused tokens are free at once, 600 are granted'
);
select results_eq(
    $$select r.status, r.actual_tokens, r.completion_tokens, r.counted_tokens, r.counted_requests::int
      from public.google_ai_reservations as r where r.id = (select x.reservation_id from r1 as x)$$,
    $$values ('committed'::text, 100, 50, 100, 1)$$,
    'the reservation is committed and counts its actual tokens'
);
select is(
    (select s.window_tokens::int from public.google_ai_quota_state as s
     where s.quota_group = 'proj-1' and s.model = 'test-model'),
    700, 'the window holds 100 + 600 tokens'
);

-- The 100 actual tokens stay in r1's slot (12:00:00) and leave with it at
-- 12:01:01; r2's 600 (12:00:10) stay until 12:01:11.
set local "llm_limits.now" = '2026-03-01 12:01:01+00';
select is(
    (select a.granted from public.acquire('test-model', 400) as a), true,
    'at 12:01:01 the committed tokens left with their original slot: 600 + 400 fit'
);

-- token_usage: exactly one row, with meta key_alias and reservation_id.
select is(
    (select count(*)::int from public.token_usage
     where meta ->> 'reservation_id' = (select r.reservation_id::text from r1 as r)),
    1, 'one token_usage row for the commit'
);
select results_eq(
    $$select t.model, t.prompt_tokens, t.completion_tokens, t.total_tokens, t.request_id,
             t.meta ->> 'key_alias', t.meta ->> 'finish_reason', t.ts
      from public.token_usage as t
      where t.meta ->> 'reservation_id' = (select r.reservation_id::text from r1 as r)$$,
    $$values ('test-model-api'::text, 100, 50, 150, 'msg-1'::text, 'k1'::text, 'STOP'::text,
              '2026-03-01 12:00:10+00'::timestamptz)$$,
    'the row has the API model id, the counts, the request_id and meta (caller''s keys kept)'
);

-- Idempotent.
select is(
    public.commit_usage((select r.reservation_id from r1 as r), 100, 50), false,
    'a second commit returns false'
);
select is(
    public.commit_usage((select r.reservation_id from r1 as r), 999, 999), false,
    'even with other numbers'
);
select is(
    (select count(*)::int from public.token_usage
     where meta ->> 'reservation_id' = (select r.reservation_id::text from r1 as r)),
    1, 'no second token_usage row'
);
select is(
    (select r.actual_tokens from public.google_ai_reservations as r
     where r.id = (select x.reservation_id from r1 as x)),
    100, 'the first commit''s numbers stand'
);

-- An actual count above the estimate takes the extra tokens at once.
set local "llm_limits.now" = '2026-03-01 12:05:00+00';
create temp table r3 as select * from public.acquire('test-model', 100);
select is(
    public.commit_usage((select r.reservation_id from r3 as r), 900), true,
    'commit 900 tokens on an estimate of 100'
);
select is(
    (select a.reason from public.acquire('test-model', 200) as a), 'tpm',
    'the 800 extra tokens are counted at once: 900 + 200 > 1000'
);

-- Released or rate-limited reservations cannot be committed.
create temp table r4 as select * from public.acquire('test-model', 10);
create temp table r5 as select * from public.acquire('test-model', 10);
select ok(public.release((select r.reservation_id from r4 as r)), 'setup: r4 released');
select throws_ok(
    $$select public.commit_usage((select r.reservation_id from r4 as r), 10)$$, 'LL008', null,
    'commit of a released reservation raises LL008'
);
select isnt(
    public.report_rate_limit((select r.reservation_id from r5 as r), null, 1000), null,
    'setup: r5 rate-limited'
);
select throws_ok(
    $$select public.commit_usage((select r.reservation_id from r5 as r), 10)$$, 'LL008', null,
    'commit of a rate-limited reservation raises LL008'
);

-- A late commit of a reservation whose lease expired is accepted.
set local "llm_limits.now" = '2026-03-01 12:11:00+00';
select ok(public.run_maintenance() is not null, 'setup: maintenance expires r2''s lease (12:10:10)');
select is(
    (select r.status from public.google_ai_reservations as r
     where r.id = (select x.reservation_id from r2 as x)),
    'expired', 'r2 is expired'
);
select is(
    public.commit_usage((select r.reservation_id from r2 as r), 600), true,
    'a late commit of an expired reservation is accepted'
);
select is(
    (select a.details ->> 'late' from public.google_ai_audit_log as a
     where a.event = 'committed' and a.reservation_id = (select x.reservation_id from r2 as x)),
    'true', 'and audited as late'
);

select * from finish();
rollback;
