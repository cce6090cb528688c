-- audit_event_kinds lists the events the audit stream can hold, read from
-- the audit table's event check: every event the stream shows is listed,
-- and an event that is not listed cannot be written.
begin;
-- Steering llm_limits.now/clock_skew needs the owner-only switch (rolled back with the test).
update google_ai_internal.clock_switch set steerable = true;
select plan(4);

set local "llm_limits.now" = '2026-03-01 12:00:00+00';
insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd)
values ('kinds-model', 'kinds-model', 1, 1000, 100);
insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group)
values ('kk1', 'KINDS_KEY_1', 'kinds-proj');

select set_eq(
    $$select * from public.audit_event_kinds()$$,
    array[
        'granted', 'refused', 'committed', 'released', 'rate_limited', 'expired',
        'config_changed', 'key_disabled', 'key_enabled', 'limit_observed',
        'outage_cooldown', 'outage_ended'
    ],
    'the event names of the audit stream'
);

-- One of each kind the RPCs write: grant, refusal, commit, release, 429,
-- config change, key disabled and enabled.
create temp table g1 as select * from public.acquire('kinds-model', 10);
select public.acquire('kinds-model', 10);
select public.settle((select g.reservation_id from g1 as g), 200,
    '{"usageMetadata": {"promptTokenCount": 10}}');
set local "llm_limits.now" = '2026-03-01 12:02:00+00';
create temp table g2 as select * from public.acquire('kinds-model', 10);
select public.settle((select g.reservation_id from g2 as g), null, null, 'not_sent');
set local "llm_limits.now" = '2026-03-01 12:04:00+00';
create temp table g3 as select * from public.acquire('kinds-model', 10);
select public.settle((select g.reservation_id from g3 as g), 429, '{"error": {"code": 429}}');
select public.disable_key('kk1', 'test');
select public.enable_key('kk1', 'test');

select is_empty(
    $$select a.event from public.google_ai_audit_log as a
      except select k from public.audit_event_kinds() as k$$,
    'every event in the stream is a listed kind'
);
select set_eq(
    $$select distinct a.event from public.google_ai_audit_log as a where a.key_alias = 'kk1'$$,
    array[
        'granted', 'refused', 'committed', 'released', 'rate_limited', 'config_changed',
        'key_disabled', 'key_enabled'
    ],
    'the calls above wrote those eight kinds'
);
select throws_ok(
    $$insert into public.google_ai_audit_records (event) values ('not_a_kind')$$, '23514', null,
    'an event that is not listed violates the check'
);

select * from finish();
rollback;
