-- batch_outlook: a model's pool summed over the groups of the keys a batch
-- holds: RPM and TPM left in the window (none while a group cools down), RPD
-- left today, the window a grant holds, and the caller's mean input tokens
-- per committed call. An unenforced limit is null. LL001 unknown model.
begin;
update google_ai_internal.clock_switch set steerable = true;
select plan(8);

insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd)
values ('out-m', 'out-m-api', 5, 1000, 50), ('out-free', 'out-free-api', null, null, null);
insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group)
values ('ok1', 'OUT_KEY_1', 'out-p1'), ('ok2', 'OUT_KEY_2', 'out-p2');
update public.google_ai_settings set window_ms = 10000, window_guard_ms = 500;

set local "llm_limits.now" = '2026-03-01 12:00:00+00';
select public.acquire('out-m', 100, key_aliases => array['ok1'], caller => 'nb', request_id => 'o1');
select public.acquire('out-m', 100, key_aliases => array['ok1'], caller => 'nb', request_id => 'o2');
select public.acquire('out-m', 50, key_aliases => array['ok2'], caller => 'bot', request_id => 'o3');
select public.settle(r.id, 200, jsonb_build_object('usageMetadata', jsonb_build_object(
    'promptTokenCount', u.prompt, 'candidatesTokenCount', 1
)))
from public.google_ai_reservations as r
inner join (values ('o1', 60), ('o2', 80), ('o3', 10)) as u (request_id, prompt) on r.request_id = u.request_id;

select results_eq(
    $$select resolved_model, groups, rpm_limit, rpm_left, tpm_limit, tpm_left, rpd_limit, rpd_left,
             window_ms
      from public.batch_outlook('out-m-api')$$,
    $$values ('out-m'::text, 2, 10, 7, 2000::bigint, 1850::bigint, 100, 97, 10500)$$,
    'every group: limits summed, what is left, the window plus guard (an API id resolves)'
);
select results_eq(
    $$select groups, rpm_left, tpm_left, rpd_left, tokens_per_call
      from public.batch_outlook('out-m', array['ok1'], 'nb')$$,
    $$values (1, 3, 860::bigint, 48, 70)$$,
    'only the groups of the keys held; tokens_per_call is the caller''s mean'
);
select is(
    (select tokens_per_call from public.batch_outlook('out-m')), 50,
    'tokens_per_call over every caller when none is named'
);
select is(
    (select next_rpd_reset from public.batch_outlook('out-m')),
    '2026-03-02 08:00:00+00'::timestamptz, 'the next Pacific midnight'
);

-- A 429 on p1 cools it down: nothing left there until the cooldown ends.
select public.acquire('out-m', 100, key_aliases => array['ok1'], caller => 'nb', request_id => 'o4');
select public.settle(r.id, 429, '{"error": {"code": 429, "details": [
    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "30s"}]}}')
from public.google_ai_reservations as r where r.request_id = 'o4';
select results_eq(
    $$select rpm_left, cooldown_until from public.batch_outlook('out-m')$$,
    $$values (4, '2026-03-01 12:00:30+00'::timestamptz)$$,
    'a cooling group has no RPM left; cooldown_until says until when'
);

select results_eq(
    $$select rpm_limit, rpm_left, tpm_limit, rpd_limit from public.batch_outlook('out-free')$$,
    $$values (null::integer, null::integer, null::bigint, null::integer)$$,
    'unenforced limits are null (unlimited)'
);
select results_eq(
    $$select groups, rpm_limit from public.batch_outlook('out-m', array['no-such-key'])$$,
    $$values (0, null::integer)$$,
    'no key held: no group, nothing to count on'
);
select throws_ok(
    $$select * from public.batch_outlook('no-such-model')$$, 'LL001', null, 'unknown model: LL001'
);

select * from finish();
rollback;
