-- retry_after_ms promises a moment when a retry can succeed. A group whose
-- TPM is smaller than the request can never serve it, so its "tpm" refusal
-- must not be the one reported when another group could serve it later.
begin;
-- Steering llm_limits.now/clock_skew needs the owner-only switch (rolled back with the test).
update google_ai_internal.clock_switch set steerable = true;
select plan(4);

set local "llm_limits.now" = '2026-03-01 12:00:00+00';
insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd)
values ('test-model', 'test-model', 10, 1000, 1);
insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group) values
('k-free', 'TEST_KEY_FREE', 'free-proj'),
('k-paid', 'TEST_KEY_PAID', 'paid-proj');
insert into public.google_ai_group_limits (quota_group, model, tpm)
values ('paid-proj', 'test-model', 5000);

select is(
    (select a.granted from public.acquire('test-model', 100, 'NO_WAIT', 0, array['k-paid']) as a), true,
    'the paid group''s one request of the day'
);

-- 2000 tokens: only the paid group (TPM 5000) can ever serve them, and its
-- day is spent until Pacific midnight (2026-03-02 08:00Z, 20 h away).
create temp table r_big as select * from public.acquire('test-model', 2000);
select is((select r.granted from r_big as r), false, '2000 tokens are refused');
select is((select r.reason from r_big as r), 'rpd', 'for rpd: the paid group''s day is spent');
select is(
    (select r.retry_after_ms from r_big as r), 72000000,
    'retry at Pacific midnight, not in 61 s when the free group still cannot fit 2000 tokens'
);

select * from finish();
rollback;
