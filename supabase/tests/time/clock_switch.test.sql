-- llm_limits.now and llm_limits.clock_skew steer google_ai_internal.clock()
-- only while the owner-only switch google_ai_internal.clock_switch is on; no
-- caller role can turn it on.
begin;
select plan(7);

update google_ai_internal.clock_switch set steerable = false;
set local "llm_limits.now" = '2001-02-03 04:05:06+00';
set local "llm_limits.clock_skew" = '5 days';
select cmp_ok(
    abs(extract(epoch from google_ai_internal.clock() - clock_timestamp())), '<', 60::numeric,
    'switch off: the settings are ignored, the clock is the real one'
);

update google_ai_internal.clock_switch set steerable = true;
select is(
    google_ai_internal.clock(), '2001-02-08 04:05:06+00'::timestamptz,
    'switch on: llm_limits.now plus llm_limits.clock_skew'
);
set local "llm_limits.now" = '';
select cmp_ok(
    abs(extract(epoch from google_ai_internal.clock() - clock_timestamp() - interval '5 days')),
    '<', 60::numeric,
    'switch on, skew only: the real clock shifted'
);
select is(
    (select count(*)::int from public.google_ai_audit_records
     where event = 'config_changed' and details ->> 'table' = 'clock_switch'),
    2, 'each flip of the switch is audited'
);

set local role service_role;
select throws_ok(
    $$update google_ai_internal.clock_switch set steerable = true$$, '42501', null,
    'service_role cannot turn the switch'
);
select throws_ok(
    $$select google_ai_internal.clock()$$, '42501', null,
    'service_role cannot call the clock directly'
);
select throws_ok(
    $$select * from google_ai_internal.clock_switch$$, '42501', null,
    'service_role cannot even read the switch'
);
reset role;

select * from finish();
rollback;
