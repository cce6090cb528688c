-- The pool of keys (a table production had before llm-limits; the first
-- migration adopts it and adds columns). A row names the env var or Kaggle
-- secret that holds a key, never the key. Keys are referenced by key_alias.

create table public.google_ai_api_keys (
    id bigint generated always as identity primary key,
    key_alias text not null,
    env_var_name text not null,
    is_active boolean not null default true,
    priority integer not null default 100,
    created_at timestamptz not null default now(),
    notes text,
    -- Google counts RPM/TPM/RPD per Cloud project and model; keys of one
    -- project share one budget. A key with no group is its own group.
    quota_group text,
    disabled_reason text,
    updated_at timestamptz not null default now()
);

-- A unique index, not a constraint: adopted tables may have had it already.
create unique index google_ai_api_keys_key_alias_key
on public.google_ai_api_keys (key_alias);

comment on table public.google_ai_api_keys is
'Pool of Google AI API keys. Rows name the env var or Kaggle secret holding the key; the key itself never enters the database.';
comment on column public.google_ai_api_keys.quota_group is
'Google Cloud project the key belongs to. Keys of one group share RPM/TPM/RPD. Null: the key is its own group.';

alter table public.google_ai_api_keys enable row level security;
revoke all on table public.google_ai_api_keys from public, anon, authenticated, service_role;
grant select, insert, update, delete on table public.google_ai_api_keys to service_role;
-- The identity sequence keeps service_role's default grant, nobody else's.
revoke all on sequence public.google_ai_api_keys_id_seq from public, anon, authenticated;
