-- Every insert, update and delete of keys, model limits, group limits and
-- settings writes one config_changed row with the old and new values.
begin;
-- Steering llm_limits.now/clock_skew needs the owner-only switch (rolled back with the test).
update google_ai_internal.clock_switch set steerable = true;
select plan(16);

set local "llm_limits.now" = '2026-03-01 12:00:00+00';
-- The mark is the records' own id: config changes are records, while the
-- view's ids of ledger events are hashes that say nothing about order.
create temp table audit_mark as
select coalesce(max(id), 0) as last_id from public.google_ai_audit_records;
create temp view changes as
select
    a.id, a.key_alias, a.model, a.ts,
    a.details ->> 'table' as tbl,
    a.details ->> 'op' as op,
    a.details -> 'old' as old_row,
    a.details -> 'new' as new_row
from public.google_ai_audit_log as a
where a.id > (select m.last_id from audit_mark as m) and a.event = 'config_changed';

-- Keys.
insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group)
values ('k-audit', 'TEST_KEY_AUDIT', 'proj-1');
update public.google_ai_api_keys set priority = 5 where key_alias = 'k-audit';
delete from public.google_ai_api_keys where key_alias = 'k-audit';
select results_eq(
    $$select c.tbl, c.op, c.key_alias, c.old_row ->> 'priority', c.new_row ->> 'priority', c.ts
      from changes as c where c.tbl = 'google_ai_api_keys' order by c.id$$,
    $$values
      ('google_ai_api_keys'::text, 'insert'::text, 'k-audit'::text, null::text, '100'::text,
       '2026-03-01 12:00:00+00'::timestamptz),
      ('google_ai_api_keys', 'update', 'k-audit', '100', '5', '2026-03-01 12:00:00+00'),
      ('google_ai_api_keys', 'delete', 'k-audit', '5', null, '2026-03-01 12:00:00+00')$$,
    'keys: insert, update and delete are audited with old and new values'
);
select is(
    (select jsonb_typeof(c.old_row) from changes as c where c.tbl = 'google_ai_api_keys' and c.op = 'insert'),
    'null', 'an insert has no old row'
);
select is(
    (select c.old_row ->> 'env_var_name' from changes as c
     where c.tbl = 'google_ai_api_keys' and c.op = 'delete'),
    'TEST_KEY_AUDIT', 'a delete keeps the whole old row'
);

-- Model limits.
insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd)
values ('m-audit', 'm-audit', 10, 1000, 100);
update public.google_ai_model_limits set rpm = 20 where model = 'm-audit';
select results_eq(
    $$select c.op, c.model, c.old_row ->> 'rpm', c.new_row ->> 'rpm'
      from changes as c where c.tbl = 'google_ai_model_limits' order by c.id$$,
    $$values ('insert'::text, 'm-audit'::text, null::text, '10'::text),
             ('update', 'm-audit', '10', '20')$$,
    'model limits: insert and update are audited'
);

-- Group limits.
insert into public.google_ai_group_limits (quota_group, model, rpm)
values ('paid-proj', 'm-audit', 100);
update public.google_ai_group_limits set tpm = 50000 where quota_group = 'paid-proj';
delete from public.google_ai_group_limits where quota_group = 'paid-proj';
select results_eq(
    $$select c.op, c.model, c.old_row ->> 'tpm', c.new_row ->> 'tpm',
             coalesce(c.new_row ->> 'quota_group', c.old_row ->> 'quota_group')
      from changes as c where c.tbl = 'google_ai_group_limits' order by c.id$$,
    $$values ('insert'::text, 'm-audit'::text, null::text, null::text, 'paid-proj'::text),
             ('update', 'm-audit', null, '50000', 'paid-proj'),
             ('delete', 'm-audit', '50000', null, 'paid-proj')$$,
    'group limits: insert, update and delete are audited'
);

-- Deleting a model cascades to its overrides; both are audited.
insert into public.google_ai_group_limits (quota_group, model, rpm)
values ('paid-proj', 'm-audit', 100);
delete from public.google_ai_model_limits where model = 'm-audit';
select results_eq(
    $$select c.tbl, c.op from changes as c
      where c.op = 'delete' and c.model = 'm-audit' and c.id > (
          select max(x.id) from changes as x where x.tbl = 'google_ai_group_limits' and x.op = 'insert'
      )
      order by c.tbl$$,
    $$values ('google_ai_group_limits'::text, 'delete'::text), ('google_ai_model_limits', 'delete')$$,
    'deleting a model audits the model row and the cascaded override'
);

-- Settings.
update public.google_ai_settings set window_guard_ms = 2000;
select results_eq(
    $$select c.op, c.old_row ->> 'window_guard_ms', c.new_row ->> 'window_guard_ms'
      from changes as c where c.tbl = 'google_ai_settings'$$,
    $$values ('update'::text, '1000'::text, '2000'::text)$$,
    'settings: an update is audited with old and new values'
);
delete from public.google_ai_settings;
insert into public.google_ai_settings (id) values (true);
select results_eq(
    $$select c.op, c.old_row ->> 'window_guard_ms', c.new_row ->> 'window_guard_ms'
      from changes as c where c.tbl = 'google_ai_settings' order by c.id$$,
    $$values ('update'::text, '1000'::text, '2000'::text), ('delete', '2000', null),
             ('insert', null, '1000')$$,
    'settings: delete and insert are audited too'
);

-- A no-op update is not a change.
select is(
    (select count(*)::int from changes), 14, 'fourteen changes so far'
);
update public.google_ai_settings set window_guard_ms = window_guard_ms;
select is((select count(*)::int from changes), 14, 'an update that changes nothing is not audited');

-- Any writer: the RPCs, plain SQL, the service role.
insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group)
values ('k-svc', 'TEST_KEY_SVC', 'proj-1');
set local role service_role;
select lives_ok(
    $$update public.google_ai_api_keys set notes = 'rotated' where key_alias = 'k-svc'$$,
    'service_role, which holds UPDATE on the key pool, can change a key'
);
reset role;
select results_eq(
    $$select c.op, c.new_row ->> 'notes' from changes as c where c.key_alias = 'k-svc' order by c.id$$,
    $$values ('insert'::text, null::text), ('update', 'rotated')$$,
    'changes made as service_role are audited as well'
);
select is(
    (select a.actor from public.google_ai_audit_log as a
     where a.event = 'config_changed' and a.key_alias = 'k-svc' and a.details ->> 'op' = 'update'),
    'service_role', 'with the role that made them as actor'
);

-- The audit rows themselves are append-only.
select throws_ok(
    $$update public.google_ai_audit_log set details = '{}'
      where id = (select max(c.id) from changes as c)$$,
    'LL010', null, 'a config_changed row cannot be edited'
);
select throws_ok(
    $$delete from public.google_ai_audit_log where id = (select max(c.id) from changes as c)$$,
    'LL010', null, 'or deleted'
);
select is(
    (select count(*)::int from changes), 16, 'sixteen config_changed rows in all'
);

select * from finish();
rollback;
