-- Backfill: while the head of a WAIT line waits for tokens, a request behind
-- it that fits now is served if the exact log says the head fits no later;
-- one that does not fit, or whose tokens the head would have to wait for, is
-- not.
begin;
update google_ai_internal.clock_switch set steerable = true;
select plan(6);

update public.google_ai_settings set wait_slice_ms = 300;
set local "llm_limits.now" = '2026-03-01 12:00:00+00';
insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd) values
('fill', 'fill', 100, 100, null), ('tight', 'tight', 100, 100, null);
insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group)
values ('k1', 'TEST_KEY_1', 'proj-1');

-- fill: one grant of 80 tokens; the head wants 50 (it waits for those 80).
select is((select a.granted from public.acquire('fill', 80) as a), true, '80 of 100 tokens taken');
select is(
    (select a.reason from public.acquire(
        'fill', 50, 'WAIT', 30000, null, 'big', null, 'a23c0000-0000-4000-8000-000000000001'
    ) as a),
    'queued', 'the head (50 tokens) waits for the 80 to leave'
);
select is(
    (select a.reason from public.acquire(
        'fill', 25, 'WAIT', 30000, null, 'mid', null, 'a23c0000-0000-4000-8000-000000000002'
    ) as a),
    'queued', '25 tokens do not fit now: it queues behind the head'
);
create temp table small as
select * from public.acquire(
    'fill', 10, 'WAIT', 30000, null, 'small', null, 'a23c0000-0000-4000-8000-000000000003'
);
select results_eq(
    $$select s.granted, s.key_alias from small as s$$, $$values (true, 'k1'::text)$$,
    '10 tokens fit now, and the head needs only the 80 to leave either way: served at once'
);

-- tight: two grants of 40, ten seconds apart; the head wants 50 (it needs the first 40 to
-- leave). 15 more tokens would make it wait for the second one as well.
select is(
    (select count(*)::int from (values (0), (10)) as g (s)
     cross join lateral (
         select set_config('llm_limits.now', ('2026-03-01 12:00:00+00'::timestamptz
             + g.s * interval '1 s')::text, true)
     ) as c
     cross join lateral public.acquire('tight', 40) as a where a.granted),
    2, 'two grants of 40'
);
create temp table tight_head as
select * from public.acquire(
    'tight', 50, 'WAIT', 30000, null, 'big', null, 'a23c0000-0000-4000-8000-000000000004'
);
select is(
    (select a.reason from public.acquire(
        'tight', 15, 'WAIT', 30000, null, 'small', null, 'a23c0000-0000-4000-8000-000000000005'
    ) as a),
    'queued', '15 tokens fit now but would delay the head: no backfill'
);

select * from finish();
rollback;
