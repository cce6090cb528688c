-- request_outcomes: per request id, the grants made under it and whether
-- Google may have answered one (committed, still open, expired, or released
-- after sending); a 429 or an unsent release had no answer. Ids without a
-- grant are absent. LL007 for more than 1000 ids or an id over 200 chars.
begin;
update google_ai_internal.clock_switch set steerable = true;
select plan(4);

insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd)
values ('ro-m', 'ro-m-api', 100, 100000, 1000);
insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group)
values ('rok', 'RO_KEY', 'ro-p');
set local "llm_limits.now" = '2026-03-01 12:00:00+00';

create temp table grants_made as
select x.request_id, a.reservation_id
from (values ('done'), ('open'), ('sent'), ('unsent'), ('limited'), ('retried'), ('retried'))
    as x (request_id)
cross join lateral public.acquire('ro-m', 10, request_id => x.request_id) as a;

select public.settle(g.reservation_id, 200, '{"usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 1}}')
from grants_made as g where g.request_id = 'done';
select public.settle(g.reservation_id, null, null, 'timeout') from grants_made as g where g.request_id = 'sent';
select public.settle(g.reservation_id, null, null, 'not_sent') from grants_made as g where g.request_id = 'unsent';
select public.settle(g.reservation_id, 429, '{"error": {"code": 429, "details": [
    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0s"}]}}')
from grants_made as g where g.request_id = 'limited';
-- 'retried': a 429 on the first attempt, the second committed.
select public.settle(min(g.reservation_id::text)::uuid, 429, '{"error": {"code": 429, "details": [
    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0s"}]}}')
from grants_made as g where g.request_id = 'retried';
select public.settle(max(g.reservation_id::text)::uuid, 200, '{"usageMetadata": {"promptTokenCount": 5}}')
from grants_made as g where g.request_id = 'retried';

select results_eq(
    $$select request_id, grants, committed, may_have_answered
      from public.request_outcomes(array['done', 'open', 'sent', 'unsent', 'limited', 'retried',
                                         'never'])$$,
    $$values ('done'::text, 1, true, true), ('limited', 1, false, false), ('open', 1, false, true),
             ('retried', 2, true, true), ('sent', 1, false, true), ('unsent', 1, false, false)$$,
    'what Google may have answered; an id without a grant is absent'
);
select is(
    (select count(*)::int from public.request_outcomes(array[]::text[])), 0, 'no ids: no rows'
);
select throws_ok(
    $$select * from public.request_outcomes(array(select g::text from generate_series(1, 1001) as g))$$,
    'LL007', null, 'more than 1000 ids: LL007'
);
select throws_ok(
    $$select * from public.request_outcomes(array[repeat('x', 201)])$$,
    'LL007', null, 'an id over 200 characters: LL007'
);

select * from finish();
rollback;
