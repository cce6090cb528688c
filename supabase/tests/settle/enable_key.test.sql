-- enable_key puts a disabled key back into the pool and audits it twice:
-- key_enabled with the reason, config_changed with the old and new row.
begin;
-- Steering llm_limits.now/clock_skew needs the owner-only switch (rolled back with the test).
update google_ai_internal.clock_switch set steerable = true;
select plan(10);

set local "llm_limits.now" = '2026-03-01 12:00:00+00';
insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd)
values ('test-model', 'test-model', 10, 1000, 100);
insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group)
values ('k1', 'TEST_KEY_1', 'proj-1');
select public.disable_key('k1', 'API_KEY_INVALID');

select is(public.enable_key('k1', 'key rotated'), true, 'enabling a disabled key returns true');
select results_eq(
    $$select k.is_active, k.disabled_reason from public.google_ai_api_keys as k where k.key_alias = 'k1'$$,
    $$values (true, null::text)$$,
    'the key is active again and its disabled reason is cleared'
);
select results_eq(
    $$select a.details ->> 'reason', a.details ->> 'was_active' from public.google_ai_audit_log as a
      where a.event = 'key_enabled' and a.key_alias = 'k1'$$,
    $$values ('key rotated'::text, 'false'::text)$$,
    'one key_enabled audit row with the reason'
);
select results_eq(
    $$select a.details -> 'old' ->> 'is_active', a.details -> 'new' ->> 'is_active'
      from public.google_ai_audit_log as a
      where a.event = 'config_changed' and a.key_alias = 'k1' and a.details ->> 'op' = 'update'
      order by a.id desc limit 1$$,
    $$values ('false'::text, 'true'::text)$$,
    'a config_changed audit row with the old and new values'
);
select is(
    (select a.granted from public.acquire('test-model', 10) as a), true,
    'acquire uses the key again'
);
select is(public.enable_key('k1'), false, 'enabling an active key returns false');
select is(
    (select k.is_active from public.google_ai_api_keys as k where k.key_alias = 'k1'), true,
    'and it stays active'
);
select throws_ok(
    $$select public.enable_key('no-such-key')$$, 'LL009', null, 'an unknown key raises LL009'
);
select throws_ok(
    $$select public.enable_key(null)$$, 'LL009', null, 'a null key raises LL009'
);
select throws_ok(
    $$select public.enable_key('k1', repeat('x', 501))$$, 'LL007', null,
    'a reason longer than 500 characters raises LL007'
);

select * from finish();
rollback;
