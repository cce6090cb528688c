-- google_ai_audit_log is append-only: rows can be added, never edited or
-- deleted (except by run_maintenance's trimming).
begin;
select plan(5);

insert into public.google_ai_audit_log (event, details)
values ('config_changed', '{"test": "append-only"}');

select is(
    (select count(*)::int from public.google_ai_audit_log where details ->> 'test' = 'append-only'),
    1, 'a row can be appended'
);
select throws_ok(
    $$update public.google_ai_audit_log set details = '{}' where details ->> 'test' = 'append-only'$$,
    'LL010', null, 'update of an audit row raises LL010'
);
select throws_ok(
    $$delete from public.google_ai_audit_log where details ->> 'test' = 'append-only'$$,
    'LL010', null, 'delete of an audit row raises LL010'
);
select throws_ok(
    $$delete from public.google_ai_audit_log$$,
    'LL010', null, 'an unfiltered delete raises LL010 too'
);
select is(
    (select count(*)::int from public.google_ai_audit_log where details ->> 'test' = 'append-only'),
    1, 'the row is still there, unchanged'
);

select * from finish();
rollback;
