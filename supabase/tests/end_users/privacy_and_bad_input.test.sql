-- A person's raw id is kept nowhere: grants, refusals, places in line,
-- per-person rows and the audit log hold a keyed hash (HMAC-SHA256 under a
-- key no API role can read), shown as its 8-hex-digit label. An end_user
-- that is empty or longer than 200 characters is LL007 and changes nothing.
begin;
select plan(16);

insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd)
values ('m', 'm-api', 2, null, 10000);
insert into public.google_ai_api_keys (key_alias, env_var_name) values ('k1', 'TEST_KEY_1');
insert into public.google_ai_caller_policies (caller, caller_class) values ('bot', 'interactive');

select is(
    google_ai_internal.end_user_hash('tg:424242'),
    (select pg_catalog.substr(extensions.hmac('tg:424242'::bytea, k.hash_key, 'sha256'), 1, 16)
     from google_ai_internal.end_user_hash_key as k),
    'the hash is HMAC-SHA256 under the install''s key, its first 16 bytes'
);
select is(
    pg_catalog.length((select k.hash_key from google_ai_internal.end_user_hash_key as k)), 32,
    'the key was generated at install: 32 random bytes'
);
select is(
    google_ai_internal.end_user_label(google_ai_internal.end_user_hash('tg:424242')),
    pg_catalog.left(pg_catalog.encode(google_ai_internal.end_user_hash('tg:424242'), 'hex'), 8),
    'a person is shown as the first 8 hex digits of the hash'
);

-- A grant, a refusal (the pool's 2 RPM spent by another person), a WAIT in line, a rule.
do $$
begin
    perform public.acquire('m', 10, 'NO_WAIT', 0, null, 'bot', null, null, 'someone');
    perform public.acquire('m', 10, 'NO_WAIT', 0, null, 'bot', null, null, 'tg:424242');
    perform public.acquire('m', 10, 'NO_WAIT', 0, null, 'bot', null, null, 'tg:424242');
    perform public.acquire('m', 10, 'WAIT', 30000, null, 'bot', 'r-wait', null, 'tg:424242');
    perform public.limit_end_user('tg:424242', rpm => 3, notes => 'a regular');
    perform public.block_end_user('tg:424242');
end;
$$;
select is(
    (select count(*)::int from public.google_ai_reservations where end_user_hash is not null), 2,
    'grants record their person'
);
select is(
    (select count(*)::int from google_ai_internal.wait_tickets where end_user_hash is not null), 1,
    'a place in line records its person'
);
select is(
    (select count(*)::int from public.google_ai_refusals where end_user_hash is not null), 1,
    'a refusal records its person'
);
select is(
    (select count(*)::int
     from (
         select pg_catalog.to_jsonb(r)::text as t from public.google_ai_reservations as r
         union all
         select pg_catalog.to_jsonb(f)::text from public.google_ai_refusals as f
         union all
         select pg_catalog.to_jsonb(w)::text from google_ai_internal.wait_tickets as w
         union all
         select pg_catalog.to_jsonb(e)::text from public.google_ai_end_users as e
         union all
         select pg_catalog.to_jsonb(u)::text from public.google_ai_end_user_usage as u
         union all
         select pg_catalog.to_jsonb(a)::text from public.google_ai_audit_log as a
     ) as everything
     where everything.t like '%424242%'),
    0, 'the raw id is in no row'
);
select is(
    (select pg_catalog.count(*)::int from public.google_ai_audit_log as a
     where a.event = 'config_changed' and a.details ->> 'table' = 'google_ai_end_users'
       and a.details -> 'new' ->> 'end_user'
           = google_ai_internal.end_user_label(google_ai_internal.end_user_hash('tg:424242'))
       and not (a.details -> 'new' ? 'end_user_hash')),
    2, 'the rule''s changes are audited with the label, never the whole hash'
);
select is(
    (select a.details ->> 'end_user' from public.google_ai_audit_log as a
     where a.event = 'refused' and a.model = 'm'),
    google_ai_internal.end_user_label(google_ai_internal.end_user_hash('tg:424242')),
    'the audit log shows a refusal''s person by label'
);

set local role service_role;
select throws_ok(
    'select * from google_ai_internal.end_user_hash_key', '42501', null,
    'service_role cannot read the key'
);
reset role;

-- Bad input: LL007, and nothing changes.
create temp table before_bad as
select
    (select count(*) from public.google_ai_reservations) as grants,
    (select count(*) from public.google_ai_refusals) as refusals,
    (select count(*) from google_ai_internal.wait_tickets) as tickets,
    (select count(*) from public.google_ai_end_users) as rules;
select throws_ok(
    $$select public.acquire('m', 10, 'NO_WAIT', 0, null, 'bot', null, null, '')$$,
    'LL007', null, 'an empty end_user is LL007'
);
select throws_ok(
    $$select public.acquire('m', 10, 'WAIT', 1000, null, 'bot', null, null, repeat('x', 201))$$,
    'LL007', null, 'an end_user over 200 characters is LL007'
);
select lives_ok(
    $$select public.acquire('m', 10, 'NO_WAIT', 0, null, 'bot', null, null, repeat('x', 200))$$,
    'an end_user of 200 characters is fine'
);
select throws_ok(
    $$select public.limit_end_user(null, 1)$$, 'LL007', null, 'an operator must name the person'
);
select throws_ok(
    $$select public.limit_end_user('tg:1', rpm => -1)$$, 'LL007', null, 'limits are not negative'
);
select results_eq(
    $$select
        (select count(*) from public.google_ai_reservations),
        (select count(*) from public.google_ai_refusals),
        (select count(*) from google_ai_internal.wait_tickets),
        (select count(*) from public.google_ai_end_users)$$,
    $$select b.grants, b.refusals + 1, b.tickets, b.rules from before_bad as b$$,
    'the bad calls changed nothing (the one good call was refused rpm: one refusal row)'
);

select * from finish();
rollback;
