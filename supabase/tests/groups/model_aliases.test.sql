-- A model named by its limits row (gemma-3-27b) and by its API id
-- (gemma-3-27b-it) is one model with one quota.
begin;
-- Steering llm_limits.now/clock_skew needs the owner-only switch (rolled back with the test).
update google_ai_internal.clock_switch set steerable = true;
select plan(6);

set local "llm_limits.now" = '2026-03-01 12:00:00+00';
-- Whatever the seed says, this test needs a small rpm.
insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd)
values ('gemma-3-27b', 'gemma-3-27b-it', 2, 15000, 14400)
on conflict (model) do update set api_model = excluded.api_model, rpm = excluded.rpm;
insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group)
values ('k1', 'TEST_KEY_1', 'proj-1');

create temp table r1 as select * from public.acquire('gemma-3-27b', 100);
create temp table r2 as select * from public.acquire('gemma-3-27b-it', 100);
select is((select r.granted from r1 as r), true, 'gemma-3-27b: granted');
select is((select r.model from r1 as r), 'gemma-3-27b-it', 'acquire returns the API id to call');
select is((select r.granted from r2 as r), true, 'gemma-3-27b-it: granted');
select is(
    (select a.reason from public.acquire('gemma-3-27b-it', 100) as a), 'rpm',
    'the third request is refused whichever name it uses: one rpm for both'
);
select results_eq(
    $$select r.model, r.api_model, count(*)::int from public.google_ai_reservations as r
      where r.quota_group = 'proj-1' group by 1, 2$$,
    $$values ('gemma-3-27b'::text, 'gemma-3-27b-it'::text, 2)$$,
    'both reservations are booked on the one limits row'
);
select is(
    (select s.window_tokens::int from public.google_ai_quota_state as s
     where s.quota_group = 'proj-1' and s.model = 'gemma-3-27b'),
    200, 'and their tokens are in one window'
);

select * from finish();
rollback;
