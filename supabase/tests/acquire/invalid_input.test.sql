-- Bad input raises the documented SQLSTATE and changes nothing: no
-- reservation, no window state, no audit row.
begin;
-- Steering llm_limits.now/clock_skew needs the owner-only switch (rolled back with the test).
update google_ai_internal.clock_switch set steerable = true;
select plan(25);

set local "llm_limits.now" = '2026-03-01 12:00:00+00';
insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd)
values ('test-model', 'test-model-api', 10, 1000, 100);
insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group)
values ('k1', 'TEST_KEY_1', 'proj-1');
-- One grant, so there is window state that bad input must not touch.
select is((select a.granted from public.acquire('test-model', 100) as a), true, 'setup: one grant');

create temp table before_state as
select
    (select count(*) from public.google_ai_reservations where model = 'test-model') as reservations,
    (select count(*) from public.google_ai_quota_state) as windows,
    (select count(*) from public.google_ai_audit_log) as audit_rows,
    (select sum(s.window_requests) from public.google_ai_quota_state as s) as window_requests,
    (select sum(s.window_tokens) from public.google_ai_quota_state as s) as window_tokens,
    (select sum(s.day_requests) from public.google_ai_quota_state as s) as day_requests;

select throws_ok(
    $$select public.acquire('no-such-model', 10)$$, 'LL001', null, 'unknown model raises LL001'
);
select throws_ok($$select public.acquire(null, 10)$$, 'LL001', null, 'null model raises LL001');
select throws_ok(
    $$select public.acquire('test-model', null)$$, 'LL002', null, 'null tokens raise LL002'
);
select throws_ok(
    $$select public.acquire('test-model', -1)$$, 'LL002', null, 'negative tokens raise LL002'
);
select throws_ok(
    $$select public.acquire('test-model', 1001)$$, 'LL003', null,
    'more tokens than the TPM of every candidate raise LL003'
);
select throws_ok(
    $$select public.acquire('test-model', 10, 'maybe')$$, 'LL004', null, 'mode maybe raises LL004'
);
select throws_ok(
    $$select public.acquire('test-model', 10, null)$$, 'LL004', null, 'null mode raises LL004'
);
select throws_ok(
    $$select public.acquire('test-model', 10, 'WAIT', -1)$$, 'LL005', null,
    'negative max_wait_ms raises LL005'
);
select throws_ok(
    $$select public.acquire('test-model', 10, 'WAIT', null)$$, 'LL005', null,
    'null max_wait_ms raises LL005'
);
select throws_ok(
    $$select public.acquire('test-model', 10, 'WAIT', 90001)$$, 'LL005', null,
    'max_wait_ms above google_ai_settings.max_wait_cap_ms (90000) raises LL005'
);
select throws_ok(
    $$select public.acquire('test-model', 10, 'NO_WAIT', 0, null, repeat('c', 201))$$, 'LL007', null,
    'a caller longer than 200 characters raises LL007'
);
select throws_ok(
    $$select public.acquire('test-model', 10, 'NO_WAIT', 0, null, 'bot', repeat('r', 201))$$,
    'LL007', null, 'a request_id longer than 200 characters raises LL007'
);
select throws_ok(
    $$select public.acquire(repeat('m', 201), 10)$$, 'LL007', null,
    'a model name longer than 200 characters raises LL007'
);
select throws_ok(
    $$select public.acquire('test-model', 10, 'NO_WAIT', 0,
                            array(select 'k' || g from generate_series(1, 1001) as g))$$,
    'LL007', null, 'more than 1000 key_aliases raise LL007'
);

select results_eq(
    $$select
        (select count(*) from public.google_ai_reservations where model = 'test-model'),
        (select count(*) from public.google_ai_quota_state),
        (select count(*) from public.google_ai_audit_log),
        (select sum(s.window_requests) from public.google_ai_quota_state as s),
        (select sum(s.window_tokens) from public.google_ai_quota_state as s),
        (select sum(s.day_requests) from public.google_ai_quota_state as s)$$,
    $$select * from before_state$$,
    'bad input changed no reservation, window, day count or audit row'
);

-- The edges of the valid ranges are accepted.
select is(
    (select a.granted from public.acquire('test-model', 1000 - 100) as a), true,
    'tokens that exactly fill the TPM are granted'
);
select is(
    (select a.granted from public.acquire('test-model', 0, 'no_wait', 90000) as a), true,
    'mode is case-insensitive, 0 tokens and max_wait_ms = cap are valid'
);
select is(
    (select a.granted from public.acquire('test-model', 0, 'NO_WAIT', 0, null, repeat('c', 200), repeat('r', 200)) as a),
    true, 'caller and request_id of exactly 200 characters are accepted'
);

-- The cap is read from google_ai_settings.
update public.google_ai_settings set max_wait_cap_ms = 1000;
select throws_ok(
    $$select public.acquire('test-model', 10, 'WAIT', 1001)$$, 'LL005', null,
    'the cap follows google_ai_settings.max_wait_cap_ms'
);

-- LL003 looks at the TPM of the groups the request could use: a group
-- override that raises TPM makes a large request fit.
insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group)
values ('kpaid', 'TEST_KEY_PAID', 'paid-proj');
insert into public.google_ai_group_limits (quota_group, model, tpm)
values ('paid-proj', 'test-model', 5000);
create temp table big as select * from public.acquire('test-model', 3000);
select is((select b.granted from big as b), true, 'a request above the model TPM fits a paid group');
select is((select b.key_alias from big as b), 'kpaid', 'and is granted on the paid group''s key');
select throws_ok(
    $$select public.acquire('test-model', 3000, 'NO_WAIT', 0, array['k1'])$$, 'LL003', null,
    'restricted to the free key, the same request raises LL003'
);
select throws_ok(
    $$select public.acquire('test-model', 5001)$$, 'LL003', null,
    'above the largest override it raises LL003'
);
select is(
    (select count(*)::int from public.google_ai_reservations where model = 'test-model'),
    (select b.reservations::int + 4 from before_state as b),
    'only the four valid requests above left reservations'
);

select * from finish();
rollback;
