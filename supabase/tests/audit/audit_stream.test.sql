-- The audit stream (view google_ai_audit_log): a grant and its settlement
-- are read from the ledger and write no audit record; the view is
-- append-only like the table it replaced, and an insert into it is kept.
begin;
-- Steering llm_limits.now/clock_skew needs the owner-only switch (rolled back with the test).
update google_ai_internal.clock_switch set steerable = true;
select plan(8);

set local "llm_limits.now" = '2026-03-01 12:00:00+00';
insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd)
values ('stream-model', 'stream-model-api', 10, 1000, 100);
insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group)
values ('sk1', 'STREAM_KEY_1', 'stream-proj');

create temp table records_before as
select count(*) as n from public.google_ai_audit_records;
create temp table r1 as
select * from public.acquire('stream-model', 120, caller => 'bot', request_id => 'msg-7');
set local "llm_limits.now" = '2026-03-01 12:00:03+00';
select is(
    (select s.action from public.settle((select r.reservation_id from r1 as r), 200,
        '{"usageMetadata": {"promptTokenCount": 100, "candidatesTokenCount": 20}}') as s),
    'commit', 'commit'
);
select is(
    (select count(*) from public.google_ai_audit_records) - (select n from records_before), 0::bigint,
    'a grant and its commit append no audit record: the ledger row is their record'
);
select results_eq(
    $$select a.event, a.ts, a.key_alias, a.model, a.details ->> 'caller', a.details ->> 'request_id'
      from public.google_ai_audit_log as a
      where a.reservation_id = (select r.reservation_id from r1 as r) order by a.ts$$,
    $$values ('granted'::text, '2026-03-01 12:00:00+00'::timestamptz, 'sk1'::text,
              'stream-model'::text, 'bot'::text, 'msg-7'::text),
             ('committed', '2026-03-01 12:00:03+00', 'sk1', 'stream-model', null, null)$$,
    'the stream shows the grant and the commit with time, key, model and reservation'
);
select is(
    (select count(distinct a.id)::int from public.google_ai_audit_log as a
     where a.reservation_id = (select r.reservation_id from r1 as r)),
    2, 'the two events have distinct ids'
);
select throws_ok(
    $$update public.google_ai_audit_log set event = 'refused'$$, 'LL010', null,
    'the stream cannot be updated'
);
select throws_ok(
    $$delete from public.google_ai_audit_log$$, 'LL010', null, 'nor deleted from'
);
select throws_ok(
    $$delete from public.google_ai_audit_records$$, 'LL010', null,
    'the records are append-only'
);
insert into public.google_ai_audit_log (event, key_alias, details)
values ('key_disabled', 'sk1', '{"reason": "written to the old table name"}');
select is(
    (select a.details ->> 'reason' from public.google_ai_audit_records as a
     where a.event = 'key_disabled' and a.key_alias = 'sk1'),
    'written to the old table name', 'an insert into the stream is appended to the records'
);

select * from finish();
rollback;
