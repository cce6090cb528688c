-- Adopt the five tables production already has (see ../shared seed: column
-- names are known, types are not). Every statement is "if not exists", so
-- this applies to an empty database and to one that already holds rows.
-- Nothing below depends on the legacy id or bucket types: keys are referenced
-- by `key_alias`, models by `model`, and legacy columns are only ever written
-- through assignment casts from text, which accept bigint, uuid, date,
-- timestamptz alike.

create table if not exists public.google_ai_api_keys (
    id bigint generated always as identity primary key,
    key_alias text not null,
    env_var_name text not null,
    is_active boolean not null default true,
    priority integer not null default 100,
    created_at timestamptz not null default now(),
    notes text
);

-- Google counts RPM/TPM/RPD per Cloud project and model; keys of one project
-- share one budget. A key with no group is its own group.
alter table public.google_ai_api_keys
add column if not exists quota_group text,
add column if not exists disabled_reason text,
add column if not exists updated_at timestamptz not null default now();

create unique index if not exists google_ai_api_keys_key_alias_key
on public.google_ai_api_keys (key_alias);

comment on table public.google_ai_api_keys is
'Pool of Google AI API keys. Rows name the env var or Kaggle secret holding the key; the key itself never enters the database.';
comment on column public.google_ai_api_keys.quota_group is
'Google Cloud project the key belongs to. Keys of one group share RPM/TPM/RPD. Null: the key is its own group.';

create table if not exists public.google_ai_model_limits (
    id bigint generated always as identity primary key,
    model text not null,
    rpm integer,
    tpm integer,
    rpd integer,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);

-- Callers may name a model by its limits row (`gemma-3-27b`) or by the id the
-- API expects (`gemma-3-27b-it`); both resolve to one row and one quota.
alter table public.google_ai_model_limits
add column if not exists api_model text;

create unique index if not exists google_ai_model_limits_model_key
on public.google_ai_model_limits (model);

-- Fill api_model for legacy rows (before any audit or updated_at trigger
-- exists: this is adoption, not an operator's change). Gemma's API ids carry
-- an -it suffix; other models use their name as is.
update public.google_ai_model_limits
set api_model = case
    when model like 'gemma-%' and model not like '%-it' then model || '-it'
    else model
end
where api_model is null;

comment on table public.google_ai_model_limits is
'Per-model quotas (Google free tier by default). A null limit is not enforced. Per-project overrides live in google_ai_group_limits.';
comment on column public.google_ai_model_limits.api_model is
'The model id sent to the API (e.g. gemma-3-27b-it). Callers may pass either this or model.';

create table if not exists public.google_ai_usage_counters (
    id bigint generated always as identity primary key,
    api_key_id bigint,
    minute_bucket timestamptz,
    day_bucket date,
    rpm_used integer not null default 0,
    tpm_used integer not null default 0,
    rpd_used integer not null default 0,
    updated_at timestamptz not null default now()
);

-- The rollup written by run_maintenance() is keyed by alias and model, which
-- do not depend on the legacy types of api_key_id and the buckets.
alter table public.google_ai_usage_counters
add column if not exists key_alias text,
add column if not exists model text,
add column if not exists bucket_kind text,
add column if not exists bucket_start timestamptz;

-- Rollup rows carry no legacy bucket values (their types are unknown), so
-- legacy NOT NULL constraints on those columns are relaxed; no row changes.
alter table public.google_ai_usage_counters
alter column api_key_id drop not null,
alter column minute_bucket drop not null,
alter column day_bucket drop not null;

create unique index if not exists google_ai_usage_counters_rollup_key
on public.google_ai_usage_counters (bucket_kind, key_alias, model, bucket_start);

comment on table public.google_ai_usage_counters is
'Per key and model rollup of the reservation ledger (bucket_kind minute or day), written by run_maintenance() before old ledger rows are deleted. Dashboards read it.';

create table if not exists public.token_usage (
    id bigint generated always as identity primary key,
    ts timestamptz not null default now(),
    model text,
    prompt_tokens integer,
    completion_tokens integer,
    total_tokens integer,
    request_id text,
    meta jsonb not null default '{}'::jsonb
);

comment on table public.token_usage is
'One row per committed call, compatible with the bot''s llm_logger rows; meta carries key_alias and reservation_id.';

create table if not exists public.google_ai_maintenance_log (
    id bigint generated always as identity primary key,
    operation text not null,
    tables_affected text [],
    deleted_count integer,
    started_at timestamptz not null default now(),
    completed_at timestamptz,
    status text,
    details jsonb,
    created_at timestamptz not null default now()
);

-- Supabase exposes public through PostgREST: nothing of ours is for the API
-- roles. RLS with no policies plus revoked privileges closes both doors.
alter table public.google_ai_api_keys enable row level security;
alter table public.google_ai_model_limits enable row level security;
alter table public.google_ai_usage_counters enable row level security;
alter table public.token_usage enable row level security;
alter table public.google_ai_maintenance_log enable row level security;

revoke all on table
public.google_ai_api_keys,
public.google_ai_model_limits,
public.google_ai_usage_counters,
public.token_usage,
public.google_ai_maintenance_log
from public, anon, authenticated, service_role;

grant select, insert, update, delete on table
public.google_ai_api_keys,
public.google_ai_model_limits,
public.google_ai_usage_counters,
public.token_usage,
public.google_ai_maintenance_log
to service_role;

-- Identity and serial sequences inherit Supabase's permissive defaults.
do $$
declare
    seq regclass;
begin
    for seq in
        select d.objid::regclass
        from pg_catalog.pg_depend as d
        inner join pg_catalog.pg_class as s on d.objid = s.oid and s.relkind = 'S'
        where d.refobjid in (
            'public.google_ai_api_keys'::regclass,
            'public.google_ai_model_limits'::regclass,
            'public.google_ai_usage_counters'::regclass,
            'public.token_usage'::regclass,
            'public.google_ai_maintenance_log'::regclass
        )
    loop
        execute format('revoke all on sequence %s from public, anon, authenticated', seq);
    end loop;
end
$$;
