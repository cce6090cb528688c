-- A 2xx settles as a commit (commit_reservation): the actual input tokens
-- replace the estimate in the reservation's original window slot, one
-- token_usage row is written; settling again changes nothing; counts Google
-- could not have sent raise LL002/LL007 and change nothing.
begin;
-- Steering llm_limits.now/clock_skew needs the owner-only switch (rolled back with the test).
update google_ai_internal.clock_switch set steerable = true;
select plan(28);

set local "llm_limits.now" = '2026-03-01 12:00:00+00';
insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd)
values ('test-model', 'test-model-api', 10, 1000, 100);
insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group)
values ('k1', 'TEST_KEY_1', 'proj-1');

create function pg_temp.usage(p_prompt integer, p_completion integer) returns jsonb
language sql as $$
    select jsonb_build_object('usageMetadata', jsonb_build_object(
        'promptTokenCount', p_prompt, 'candidatesTokenCount', p_completion
    ))
$$;

create temp table r1 as
select * from public.acquire('test-model', 500, 'NO_WAIT', 0, null, 'bot', 'msg-1');
set local "llm_limits.now" = '2026-03-01 12:00:10+00';
select is(
    (select a.reason from public.acquire('test-model', 600) as a), 'tpm',
    'estimate 500 in the window: 600 more tokens are refused'
);

select is(
    (select s.action from public.settle(
        (select r.reservation_id from r1 as r), 200,
        pg_temp.usage(100, 50) || '{"candidates": [{"finishReason": "STOP"}]}'
    ) as s),
    'commit', 'a 200 commits'
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
    'the row has the API model id, the counts, the request_id and meta (the finish reason kept)'
);

-- Idempotent.
select is(
    (select s.action from public.settle((select r.reservation_id from r1 as r), 200, pg_temp.usage(100, 50)) as s),
    'commit', 'a second 200 answers commit again'
);
select is(
    (select s.action from public.settle((select r.reservation_id from r1 as r), 200, pg_temp.usage(999, 999)) as s),
    'commit', 'even with other numbers'
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
    (select s.action from public.settle((select r.reservation_id from r3 as r), 200, pg_temp.usage(900, 0)) as s),
    'commit', 'commit 900 tokens on an estimate of 100'
);
select is(
    (select a.reason from public.acquire('test-model', 200) as a), 'tpm',
    'the 800 extra tokens are counted at once: 900 + 200 > 1000'
);

-- A 200 that comes after a release or a 429 commits nothing.
create temp table r4 as select * from public.acquire('test-model', 10);
create temp table r5 as select * from public.acquire('test-model', 10);
-- Before r5's 429 cools the group down.
create temp table r6 as select * from public.acquire('test-model', 10);
select is(
    (select s.action from public.settle((select r.reservation_id from r4 as r), null, null, 'not_sent') as s),
    'release_unsent', 'setup: r4 released'
);
select is(
    (select s.action from public.settle((select r.reservation_id from r5 as r), 429, '{"error": {"code": 429}}') as s),
    'rate_limited', 'setup: r5 rate-limited'
);
select is(
    (select s.action from public.settle((select r.reservation_id from r4 as r), 200, pg_temp.usage(10, 1)) as s),
    'commit', 'a 200 for the released r4 answers commit'
);
select is(
    (select s.action from public.settle((select r.reservation_id from r5 as r), 200, pg_temp.usage(10, 1)) as s),
    'commit', 'and for the rate-limited r5'
);
select results_eq(
    $$select r.status, r.actual_tokens, r.counted_tokens
      from public.google_ai_reservations as r
      where r.id in ((select x.reservation_id from r4 as x), (select x.reservation_id from r5 as x))
      order by r.status desc$$,
    $$values ('released'::text, null::integer, 0), ('rate_limited'::text, null::integer, 10)$$,
    'but commits neither'
);
select is(
    (select count(*)::int from public.token_usage as t
     where t.meta ->> 'reservation_id' in (
         (select x.reservation_id::text from r4 as x), (select x.reservation_id::text from r5 as x))),
    0, 'neither gets a token_usage row'
);

-- Counts Google could not have sent: raised, nothing changed.
select throws_ok(
    $$select * from public.settle((select r.reservation_id from r6 as r), 200,
        '{"usageMetadata": {"promptTokenCount": 999999999, "candidatesTokenCount": 999999999,
          "thoughtsTokenCount": 999999999}}')$$,
    'LL002', null, 'token counts summing past 2^31 raise LL002'
);
select throws_ok(
    format($$select * from public.settle(%L, 200, %L)$$,
           (select r.reservation_id from r6 as r),
           jsonb_build_object('modelVersion', repeat('v', 20000))),
    'LL007', null, 'a modelVersion too long to record raises LL007'
);
select is(
    (select r.status from public.google_ai_reservations as r
     where r.id = (select x.reservation_id from r6 as x)),
    'reserved', 'and the reservation is still open'
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
    (select s.action from public.settle((select r.reservation_id from r2 as r), 200, pg_temp.usage(600, 0)) as s),
    'commit', 'a late 200 for an expired reservation'
);
select results_eq(
    $$select r.status, r.counted_tokens from public.google_ai_reservations as r
      where r.id = (select x.reservation_id from r2 as x)$$,
    $$values ('committed'::text, 600)$$,
    'is committed'
);
select is(
    (select a.details ->> 'late' from public.google_ai_audit_log as a
     where a.event = 'committed' and a.reservation_id = (select x.reservation_id from r2 as x)),
    'true', 'and audited as late'
);

select * from finish();
rollback;
