-- Refusals of one caller, model, key set and reason, each within
-- refusal_fold_ms (default 1 s) of the previous, fold into one audit row that
-- carries details.count and the first and last time; a row spans at most one
-- window. Grants are never folded, and every refusal is still counted.
begin;
-- Steering llm_limits.now/clock_skew needs the owner-only switch (rolled back with the test).
update google_ai_internal.clock_switch set steerable = true;
select plan(13);

insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd)
values ('fold-model', 'fold-model-api', 2, 1000, 1000), ('fold-day', 'fold-day-api', 100, 1000, 1);
insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group)
values ('fk1', 'FOLD_KEY_1', 'fold-proj');

create temp view folds as
select a.ts, a.key_alias, (a.details ->> 'count')::int as n, a.details ->> 'caller' as caller,
       a.details ->> 'reason' as reason,
       (a.details ->> 'first_at')::timestamptz as first_at,
       (a.details ->> 'last_at')::timestamptz as last_at
from public.google_ai_audit_log as a
where a.event = 'refused' and a.model = 'fold-model';

set local "llm_limits.now" = '2026-03-01 12:00:00+00';
select ok((select a.granted from public.acquire('fold-model', 1, caller => 'nb') as a), 'grant 1');
select ok((select a.granted from public.acquire('fold-model', 1, caller => 'nb') as a), 'grant 2');
select is(
    (select count(*)::int from public.google_ai_audit_log
     where event = 'granted' and model = 'fold-model'),
    2, 'grants are never folded: one row each'
);

-- Three refusals 0.4 s apart: one row.
select public.acquire('fold-model', 1, caller => 'nb');
set local "llm_limits.now" = '2026-03-01 12:00:00.4+00';
select public.acquire('fold-model', 1, caller => 'nb');
set local "llm_limits.now" = '2026-03-01 12:00:00.8+00';
select public.acquire('fold-model', 1, caller => 'nb');
select results_eq(
    $$select n, first_at, last_at, ts, reason, key_alias from folds$$,
    $$values (3, '2026-03-01 12:00:00+00'::timestamptz, '2026-03-01 12:00:00.8+00'::timestamptz,
              '2026-03-01 12:00:00+00'::timestamptz, 'rpm'::text, 'fk1'::text)$$,
    'three refusals within 1 s of each other: one row, count 3, first and last time'
);

-- Another caller, same everything else: its own row.
select public.acquire('fold-model', 1, caller => 'bot');
select is((select n from folds where caller = 'bot'), 1, 'another caller folds separately');

-- A pause longer than refusal_fold_ms starts a new row.
set local "llm_limits.now" = '2026-03-01 12:00:02+00';
select public.acquire('fold-model', 1, caller => 'nb');
select results_eq(
    $$select n from folds where caller = 'nb' order by first_at$$,
    $$values (3), (1)$$,
    'a gap over 1 s starts a new row'
);

-- Another reason (no usable key among those passed) is another row.
select public.acquire('fold-model', 1, key_aliases => array['not-a-key'], caller => 'nb');
select is(
    (select count(*)::int from folds where caller = 'nb'), 3,
    'a refusal for another reason gets its own row'
);

-- Another key set: record_acquire_verdict folds by the key set it is given.
select google_ai_internal.record_acquire_verdict(
    row(false, null, 'fk1', null, 'fold-model-api', 0, 'rpm', 1000, null, null, null)::public.acquire_result,
    'fold-model', 1, 'NO_WAIT', 0, 1, 'nb', null, array['fk1']
);
select google_ai_internal.record_acquire_verdict(
    row(false, null, 'fk1', null, 'fold-model-api', 0, 'rpm', 1000, null, null, null)::public.acquire_result,
    'fold-model', 1, 'NO_WAIT', 0, 1, 'nb', null, array['fk1', 'fk1']
);
select is(
    (select f.refusals from public.google_ai_refusals as f where f.key_set = array['fk1']),
    2, 'the same key set (duplicates and order aside) folds; it is not the all-keys set'
);

-- A row spans at most one window, even when refusals never pause.
-- fold-day's RPD of 1 is used up: it refuses for the rest of the quota day.
set local "llm_limits.now" = '2026-03-01 12:10:00+00';
select ok((select a.granted from public.acquire('fold-day', 1) as a), 'fold-day: its one grant');
do $$
begin
    for i in 0..70 loop
        perform pg_catalog.set_config(
            'llm_limits.now', ('2026-03-01 12:10:00+00'::timestamptz + i * interval '0.9 s')::text,
            true
        );
        perform public.acquire('fold-day', 1, caller => 'loop');
    end loop;
end
$$;
select results_eq(
    $$select sum((a.details ->> 'count')::int)::int, count(*)::int,
             bool_and((a.details ->> 'last_at')::timestamptz - a.ts < interval '60 s')
      from public.google_ai_audit_log as a where a.event = 'refused' and a.model = 'fold-day'$$,
    $$values (71, 2, true)$$,
    'refusals that never pause start a new row each window (63 s: two rows); all 71 counted'
);

-- Folding off: one row per refusal.
update public.google_ai_settings set refusal_fold_ms = 0;
set local "llm_limits.now" = '2026-03-01 12:20:00+00';
select public.acquire('fold-day', 1, caller => 'nofold');
select public.acquire('fold-day', 1, caller => 'nofold');
select results_eq(
    $$select (a.details ->> 'count')::int from public.google_ai_audit_log as a
      where a.event = 'refused' and a.details ->> 'caller' = 'nofold'$$,
    $$values (1), (1)$$,
    'refusal_fold_ms = 0 keeps one row per refusal'
);
select throws_ok(
    $$update public.google_ai_settings set refusal_fold_ms = 1001$$, '23514', null,
    'refusal_fold_ms is at most 1 s'
);

-- Every refusal is accounted for.
select is(
    (select sum(coalesce((a.details ->> 'count')::int, 1))::int from public.google_ai_audit_log as a
     where a.event = 'refused' and a.model = 'fold-model'),
    3 + 1 + 1 + 1 + 2,
    'summing details.count over refused rows gives every refusal made'
);

select * from finish();
rollback;
