-- Usage rollups (a table production had; the first migration adopts it).
-- run_maintenance() writes one row per key, model and minute or quota day,
-- keyed by alias and model; the legacy columns (api_key_id, minute_bucket,
-- day_bucket) keep whatever types production gave them and may be null.

create table public.google_ai_usage_counters (
    id bigint generated always as identity primary key,
    api_key_id bigint,
    minute_bucket timestamptz,
    day_bucket date,
    rpm_used integer not null default 0,
    tpm_used integer not null default 0,
    rpd_used integer not null default 0,
    updated_at timestamptz not null default now(),
    key_alias text,
    model text,
    bucket_kind text,
    bucket_start timestamptz
);

create unique index google_ai_usage_counters_rollup_key
on public.google_ai_usage_counters (bucket_kind, key_alias, model, bucket_start);

comment on table public.google_ai_usage_counters is
'Per key and model rollup of the reservation ledger (bucket_kind minute or day), written by run_maintenance() before old ledger rows are deleted. Dashboards read it.';

alter table public.google_ai_usage_counters enable row level security;
revoke all on table public.google_ai_usage_counters from public, anon, authenticated, service_role;
grant select, insert, update, delete on table public.google_ai_usage_counters to service_role;
revoke all on sequence public.google_ai_usage_counters_id_seq from public, anon, authenticated;
