-- The tunables of llm-limits: one row. Every value is bounded by a CHECK;
-- changing the row is audited like any config change (270_config_audit.sql).

create table public.google_ai_settings (
    id boolean primary key default true check (id),
    window_ms integer not null default 60000 check (window_ms between 1000 and 3600000),
    window_guard_ms integer not null default 1000 check (window_guard_ms between 0 and 60000),
    rpd_time_zone text not null default 'America/Los_Angeles',
    lease_ms integer not null default 600000 check (lease_ms between 1000 and 86400000),
    wait_recheck_ms integer not null default 25 check (wait_recheck_ms between 5 and 5000),
    default_cooldown_ms integer not null default 60000
    check (default_cooldown_ms between 0 and 86400000),
    ledger_retention interval not null default interval '7 days',
    audit_retention interval not null default interval '30 days',
    updated_at timestamptz not null default now(),
    refusal_fold_ms integer not null default 1000
    check (refusal_fold_ms between 0 and 1000),
    rollup_retention interval not null default interval '30 days',
    wait_slice_ms integer not null default 2000
    check (wait_slice_ms between 100 and 60000),
    wait_ticket_grace_ms integer not null default 1000
    check (wait_ticket_grace_ms between 100 and 60000),
    learn_limits text not null default 'apply'
    check (learn_limits in ('off', 'suggest', 'apply')),
    retry_backoff_ms integer not null default 500
    check (retry_backoff_ms between 0 and 60000),
    aging_ms integer not null default 60000
    check (aging_ms between 1000 and 86400000),
    outage_after_failures integer not null default 3
    check (outage_after_failures between 0 and 1000),
    outage_cooldown_ms integer not null default 1000
    check (outage_cooldown_ms between 10 and 600000),
    outage_cooldown_max_ms integer not null default 8000
    check (outage_cooldown_max_ms between 10 and 3600000),
    constraint google_ai_settings_outage_cooldown_order
    check (outage_cooldown_max_ms >= outage_cooldown_ms)
);

comment on table public.google_ai_settings is
'Tunables of llm-limits (one row).';
comment on column public.google_ai_settings.refusal_fold_ms is
'Refusals of one caller, model, key set and reason that follow each other within this many ms fold into one audit row (0: never fold). A folded row spans at most one window.';
comment on column public.google_ai_settings.rollup_retention is
'How long run_maintenance() keeps per-minute rollups (google_ai_usage_counters, bucket_kind minute); per-day rollups and google_ai_event_counts are kept.';
comment on column public.google_ai_settings.wait_slice_ms is
'Longest time one WAIT call of acquire() stays in the database (it then returns and the caller calls again).';
comment on column public.google_ai_settings.wait_ticket_grace_ms is
'How late a waiter may call back before its place in line expires.';
comment on column public.google_ai_settings.learn_limits is
'What a 429 whose quotaValue differs from the configured limit does: off (nothing), suggest (audit limit_observed), apply (the default: also lower the quota group''s limit, audited as a config change; never raises one), so a limit set above Google''s costs one 429.';
comment on column public.google_ai_settings.aging_ms is
'Aging of the WAIT queues: a class whose waiter has waited this long while the class was granted nothing on the model for this long goes to the top (one grant per aging_ms), so no class starves; under an ordinary load classes keep their order.';
comment on column public.google_ai_settings.retry_backoff_ms is
'Pause settle() asks for before the next attempt after a 5xx, a timeout or a lost connection (jittered between half and all of it).';

comment on column public.google_ai_settings.outage_after_failures is
'After this many failed answers in a row on a quota group and model (5xx, 408, a timeout, a cut connection), Google is taken to be out there: acquire refuses it (reason cooldown) for outage_cooldown_ms, then lets one probe through and holds everyone else until it is answered. 0 turns this off.';
comment on column public.google_ai_settings.outage_cooldown_ms is
'The first cooldown of an outage; while a probe is out, waiters look again this often. Each probe that fails doubles the cooldown, up to outage_cooldown_max_ms.';
comment on column public.google_ai_settings.outage_cooldown_max_ms is
'The longest cooldown of an outage, and the longest a probe that never answers (its caller gone) holds the others back.';

-- The row is part of the schema: google_ai_internal.settings() reads it
-- with `into strict`. Inserted before the audit trigger exists.
insert into public.google_ai_settings (id) values (true)
on conflict (id) do nothing;

alter table public.google_ai_settings enable row level security;
revoke all on table public.google_ai_settings from public, anon, authenticated, service_role;
grant select, insert, update, delete on table public.google_ai_settings to service_role;
