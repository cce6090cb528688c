-- google_ai_group_limits overrides a model's limits for one quota group
-- (e.g. a paid project); a null override falls back to the model's limit.
begin;
-- Steering llm_limits.now/clock_skew needs the owner-only switch (rolled back with the test).
update google_ai_internal.clock_switch set steerable = true;
select plan(10);

set local "llm_limits.now" = '2026-03-01 12:00:00+00';
insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd) values
('m-over', 'm-over', 1, 1000, 4),
('m-other', 'm-other', 1, 1000, 100);
insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group) values
('k-free', 'TEST_KEY_FREE', 'free-proj'),
('k-paid', 'TEST_KEY_PAID', 'paid-proj');
insert into public.google_ai_group_limits (quota_group, model, rpm, tpm, rpd)
values ('paid-proj', 'm-over', 10, 5000, null);

select is(
    (select a.granted from public.acquire('m-over', 10, 'NO_WAIT', 0, array['k-free']) as a), true,
    'free group: first request'
);
select is(
    (select a.reason from public.acquire('m-over', 10, 'NO_WAIT', 0, array['k-free']) as a), 'rpm',
    'free group: the model''s rpm 1 applies'
);
select throws_ok(
    $$select public.acquire('m-over', 3000, 'NO_WAIT', 0, array['k-free'])$$, 'LL003', null,
    'free group: the model''s TPM 1000 applies'
);

select is(
    (select a.granted from public.acquire('m-over', 3000, 'NO_WAIT', 0, array['k-paid']) as a), true,
    'paid group: 3000 tokens fit the overridden TPM 5000'
);
select is(
    (select a.granted from public.acquire('m-over', 10, 'NO_WAIT', 0, array['k-paid']) as a), true,
    'paid group: a second request fits the overridden rpm 10'
);
select is(
    (select a.reason from public.acquire('m-over', 2000, 'NO_WAIT', 0, array['k-paid']) as a), 'tpm',
    'paid group: 3010 + 2000 tokens exceed the overridden TPM'
);
select is(
    (select count(*)::int from public.acquire('m-over', 0, 'NO_WAIT', 0, array['k-paid']) as a where a.granted)
    + (select count(*)::int from public.acquire('m-over', 0, 'NO_WAIT', 0, array['k-paid']) as a where a.granted),
    2, 'paid group: third and fourth requests of the day'
);
select is(
    (select a.reason from public.acquire('m-over', 0, 'NO_WAIT', 0, array['k-paid']) as a), 'rpd',
    'paid group: a null override rpd falls back to the model''s rpd 4'
);

-- The override is for one model only.
select is(
    (select a.granted from public.acquire('m-other', 10, 'NO_WAIT', 0, array['k-paid']) as a), true,
    'another model on the paid group: first request'
);
select is(
    (select a.reason from public.acquire('m-other', 10, 'NO_WAIT', 0, array['k-paid']) as a), 'rpm',
    'another model on the paid group keeps its own rpm 1'
);

select * from finish();
rollback;
