-- acquire grants until the RPM window is full, then refuses with a truthful
-- retry_after_ms, and audits both.
begin;
-- Steering llm_limits.now/clock_skew needs the owner-only switch (rolled back with the test).
update google_ai_internal.clock_switch set steerable = true;
select plan(8);

select set_config('llm_limits.now', '2026-03-01 12:00:00+00', true);
insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd)
values ('test-model', 'test-model-api', 2, 1000, 100);
insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group)
values ('k1', 'TEST_KEY_1', 'proj-1');

select is(
    (select a.granted from public.acquire('test-model', 10) as a), true, 'first request is granted'
);
select is(
    (select a.model from public.acquire('test-model-api', 10) as a), 'test-model-api',
    'the API id names the same model, and acquire returns the API id to call'
);

create temp table refusal as select * from public.acquire('test-model', 10);
select is((select r.granted from refusal as r), false, 'third request in the window is refused');
select is((select r.reason from refusal as r), 'rpm', 'refused for rpm');
-- The oldest grant was at 12:00:00; it leaves after the 60 s window + 1 s guard.
select is((select r.retry_after_ms from refusal as r), 61000, 'retry_after_ms is when the oldest slot frees');

select set_config('llm_limits.now', '2026-03-01 12:01:00.999+00', true);
select is(
    (select a.granted from public.acquire('test-model', 10) as a), false,
    'still refused 1 ms before window + guard ends'
);
select set_config('llm_limits.now', '2026-03-01 12:01:01+00', true);
select is(
    (select a.granted from public.acquire('test-model', 10) as a), true,
    'granted once window + guard has passed'
);

select results_eq(
    $$select event, count(*)::int from public.google_ai_audit_log
      where model = 'test-model' and event in ('granted', 'refused') group by event order by event$$,
    $$values ('granted'::text, 3), ('refused'::text, 2)$$,
    'every grant and refusal is audited'
);

select * from finish();
rollback;
