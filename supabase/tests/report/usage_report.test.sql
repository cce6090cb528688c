-- usage_report: the same figures per caller, model, UTC day and class, from
-- the ledger (grants, commits, tokens, waits), the folded refusals (by
-- reason), Google's 429s (caller read from the grant) and the day roll-ups
-- of deleted detail ('(rolled up)', whole UTC days). Bad `by` or an empty
-- period is LL007.
begin;
update google_ai_internal.clock_switch set steerable = true;
select plan(14);

insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd)
values ('rep-a', 'rep-a-api', 2, 1000, 1000), ('rep-b', 'rep-b-api', 100, 1000, 1000);
insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group)
values ('rk1', 'REP_KEY_1', 'rep-proj');

set local "llm_limits.now" = '2026-03-01 12:00:00+00';
-- nb: two grants of rep-a, one committed (8 in, 3 out), one answered 429.
select public.acquire('rep-a', 10, caller => 'nb', request_id => 'nb-1');
select public.acquire('rep-a', 10, caller => 'nb', request_id => 'nb-2');
select public.settle(r.id, 200, '{"usageMetadata": {"promptTokenCount": 8, "candidatesTokenCount": 3}}')
from public.google_ai_reservations as r where r.request_id = 'nb-1';
select public.settle(r.id, 429, '{"error": {"code": 429, "details": [
    {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
      {"quotaId": "GenerateRequestsPerMinutePerProjectPerModel"}]},
    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"}]}}')
from public.google_ai_reservations as r where r.request_id = 'nb-2';
-- bot: refused three times for rpm (one folded row), then a grant of rep-b.
select public.acquire('rep-a', 10, caller => 'bot');
select public.acquire('rep-a', 10, caller => 'bot');
select public.acquire('rep-a', 10, caller => 'bot');
select public.acquire('rep-b', 20, caller => 'bot', request_id => 'bot-1');
-- The grants' waits, as a WAIT would have recorded them.
update public.google_ai_reservations set waited_ms = 100 where request_id = 'nb-1';
update public.google_ai_reservations set waited_ms = 300 where request_id = 'nb-2';
-- No caller (psql) on the next day, and a roll-up of an older day.
set local "llm_limits.now" = '2026-03-02 09:00:00+00';
select public.acquire('rep-b', 5);
insert into public.google_ai_event_counts (day, event, key_alias, model, events, tokens)
values ('2026-02-27', 'granted', 'rk1', 'rep-a', 40, 400),
       ('2026-02-27', 'committed', 'rk1', 'rep-a', 39, 0),
       ('2026-02-27', 'refused', 'rk1', 'rep-a', 5, 0),
       ('2026-02-27', 'rate_limited', 'rk1', 'rep-a', 1, 0),
       ('2026-02-20', 'granted', 'rk1', 'rep-a', 1000, 1);
set local "llm_limits.now" = '2026-03-02 10:00:00+00';

create temp view rep as
select * from public.usage_report('2026-02-27 06:00+00', '2026-03-03 00:00+00', 'caller');

select results_eq(
    $$select bucket, requests, committed, input_tokens, output_tokens from rep$$,
    $$values ('(no caller)'::text, 1::bigint, 0::bigint, 5::bigint, 0::bigint),
             ('(rolled up)', 40, 39, 400, 0),
             ('bot', 1, 0, 20, 0),
             ('nb', 2, 1, 18, 3)$$,
    'by caller: grants, commits, input tokens (Google''s count once committed), output tokens'
);
select results_eq(
    $$select bucket, refusals, refusals_by_reason, google_429s from rep$$,
    $$values ('(no caller)'::text, 0::bigint, '{}'::jsonb, 0::bigint),
             ('(rolled up)', 5, '{"unknown": 5}', 1),
             ('bot', 3, '{"rpm": 3}', 0),
             ('nb', 0, '{}', 1)$$,
    'refusals of our own by reason (folds counted whole), Google''s 429s apart'
);
select results_eq(
    $$select wait_p50_ms, wait_p95_ms, rolled_up_requests, fallbacks from rep where bucket = 'nb'$$,
    $$values (100, 300, 0::bigint, 0::bigint)$$,
    'waits p50/p95 over the caller''s grants; no fallback is recorded yet'
);
select is(
    (select wait_p50_ms from rep where bucket = '(rolled up)'), null,
    'roll-ups keep no waits'
);
select results_eq(
    $$select bucket, requests, refusals, google_429s
      from public.usage_report('2026-02-27 06:00+00', '2026-03-03 00:00+00', 'model')$$,
    $$values ('rep-a'::text, 42::bigint, 8::bigint, 2::bigint), ('rep-b', 2, 0, 0)$$,
    'by model: detail and roll-ups add up'
);
select results_eq(
    $$select bucket, requests
      from public.usage_report('2026-02-27 06:00+00', '2026-03-03 00:00+00', 'day')$$,
    $$values ('2026-02-27'::text, 40::bigint), ('2026-03-01', 3), ('2026-03-02', 1)$$,
    'by UTC day; a roll-up counts its whole day when the period overlaps it'
);
select results_eq(
    $$select bucket, requests
      from public.usage_report('2026-02-27 06:00+00', '2026-03-03 00:00+00', 'class')$$,
    $$values ('(rolled up)'::text, 40::bigint), ('default', 4)$$,
    'by class: every caller is in class default until caller classes exist'
);
select is(
    (select sum(requests)::int from public.usage_report(by => 'model')),
    44, 'defaults: the 7 days before now (2026-03-02 10:00): the roll-up of 02-27 in, 02-20 out'
);
select is(
    (select sum(requests)::int
     from public.usage_report('2026-03-02 00:00+00', null, 'model')),
    1, 'since bounds the period: only the grant of 03-02'
);
select is(
    (select count(*)::int from public.usage_report('2030-01-01 00:00+00', '2030-01-02 00:00+00')),
    0, 'an empty period: no rows'
);
select throws_ok(
    $$select * from public.usage_report(by => 'key')$$, 'LL007', null, 'an unknown by is LL007'
);
select throws_ok(
    $$select * from public.usage_report(by => null)$$, 'LL007', null, 'a null by is LL007'
);
select throws_ok(
    $$select * from public.usage_report('2026-03-02 00:00+00', '2026-03-01 00:00+00')$$,
    'LL007', null, 'since after until is LL007'
);
select is(
    google_ai_internal.caller_class('anyone'), 'default', 'caller_class: default for now'
);

select * from finish();
rollback;
