-- disable_key takes a key out of the pool and audits it twice: key_disabled
-- with the reason, config_changed with the old and new row.
begin;
-- Steering llm_limits.now/clock_skew needs the owner-only switch (rolled back with the test).
update google_ai_internal.clock_switch set steerable = true;
select plan(7);

set local "llm_limits.now" = '2026-03-01 12:00:00+00';
insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd)
values ('test-model', 'test-model', 10, 1000, 100);
insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group)
values ('k1', 'TEST_KEY_1', 'proj-1');

select is(public.disable_key('k1', 'API_KEY_INVALID'), true, 'disabling an active key returns true');
select results_eq(
    $$select k.is_active, k.disabled_reason from public.google_ai_api_keys as k where k.key_alias = 'k1'$$,
    $$values (false, 'API_KEY_INVALID'::text)$$,
    'the key is inactive, with the reason'
);
select results_eq(
    $$select a.details ->> 'reason', a.details ->> 'was_active' from public.google_ai_audit_log as a
      where a.event = 'key_disabled' and a.key_alias = 'k1'$$,
    $$values ('API_KEY_INVALID'::text, 'true'::text)$$,
    'one key_disabled audit row with the reason'
);
select results_eq(
    $$select a.details -> 'old' ->> 'is_active', a.details -> 'new' ->> 'is_active',
             a.details -> 'new' ->> 'disabled_reason'
      from public.google_ai_audit_log as a
      where a.event = 'config_changed' and a.key_alias = 'k1' and a.details ->> 'op' = 'update'$$,
    $$values ('true'::text, 'false'::text, 'API_KEY_INVALID'::text)$$,
    'one config_changed audit row with the old and new values'
);
select is(
    (select a.reason from public.acquire('test-model', 10) as a), 'no_key',
    'acquire no longer uses the key'
);
select is(public.disable_key('k1', 'leaked'), false, 'disabling it again returns false');
select is(
    (select k.is_active from public.google_ai_api_keys as k where k.key_alias = 'k1'), false,
    'and it stays inactive'
);

select * from finish();
rollback;
