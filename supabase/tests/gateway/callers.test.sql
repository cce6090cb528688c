-- Gateway callers: added by token digest, identified with their model scope,
-- revoked at once, every config change audited (last_used_at is not one).
begin;
select plan(14);

insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd)
values ('test-model', 'test-model-api', 2, 1000, 100);

select is(
    public.add_caller('notebook-1', sha256('tok-1'::bytea), array['test-model-api'], 'eval'),
    true, 'a caller is added by the digest of its token'
);
select is(
    public.add_caller('notebook-1', sha256('tok-other'::bytea)),
    false, 'a taken name adds nothing'
);
select throws_ok(
    $$select public.add_caller('bad name!', sha256('x'::bytea))$$, 'LL007', null,
    'a name outside [A-Za-z0-9._-] is refused'
);
select throws_ok(
    $$select public.add_caller('short-hash', '\x0102'::bytea)$$, 'LL007', null,
    'a digest that is not 32 bytes is refused'
);
select throws_ok(
    $$select public.add_caller('typo', sha256('y'::bytea), array['no-such-model'])$$, 'LL001', null,
    'an unknown allowed model is refused'
);
select is(
    (select count(*)::int from public.google_ai_callers), 1, 'refused adds left no row'
);

select results_eq(
    $$select caller, resolved_model, model_allowed
      from public.identify_caller(sha256('tok-1'::bytea), 'test-model')$$,
    $$values ('notebook-1'::text, 'test-model'::text, true)$$,
    'the token identifies its caller; the model resolves by name or API id'
);
select results_eq(
    $$select resolved_model, model_allowed
      from public.identify_caller(sha256('tok-1'::bytea), 'gemma-3-27b-it')$$,
    $$values ('gemma-3-27b'::text, false)$$,
    'a model outside the caller''s list is known but not allowed'
);
select is_empty(
    $$select * from public.identify_caller(sha256('wrong'::bytea), 'test-model')$$,
    'an unknown token identifies nobody'
);
select isnt(
    (select last_used_at from public.google_ai_callers where name = 'notebook-1'), null,
    'identifying a caller records when it was last used'
);

select is(public.revoke_caller('notebook-1'), true, 'revoke reports the caller was active');
select is_empty(
    $$select * from public.identify_caller(sha256('tok-1'::bytea), 'test-model')$$,
    'a revoked token identifies nobody from then on'
);
select is(public.revoke_caller('nobody'), null, 'revoking an unknown caller is null');

select results_eq(
    $$select details ->> 'op', details -> 'new' ->> 'active'
      from public.google_ai_audit_log
      where event = 'config_changed' and details ->> 'table' = 'google_ai_callers'
      order by id$$,
    $$values ('insert'::text, 'true'::text), ('update', 'false')$$,
    'add and revoke are audited; the last_used_at refresh is not'
);

select * from finish();
rollback;
