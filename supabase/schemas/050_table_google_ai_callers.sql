-- Callers of the llm-gateway Edge Function: who may spend the quota pool
-- without holding a Google key. A caller presents a random token; only its
-- SHA-256 is stored, so a leaked table row cannot be replayed, and revoking
-- one caller touches no key and no other caller. The token is made and
-- hashed outside the database (the CLI, the gateway): it never travels to
-- Postgres, so no statement log can hold it.

create table public.google_ai_callers (
    name text primary key
    check (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$'),
    token_sha256 bytea not null unique
    check (pg_catalog.octet_length(token_sha256) = 32),
    -- Null: every model. Entries are limits rows' model or api_model names.
    allowed_models text [],
    active boolean not null default true,
    created_at timestamptz not null default now(),
    last_used_at timestamptz,
    notes text,
    updated_at timestamptz not null default now()
);

comment on table public.google_ai_callers is
'Callers of the llm-gateway Edge Function: a name, the SHA-256 of its token (never the token), the models it may use.';
comment on column public.google_ai_callers.allowed_models is
'Model names (google_ai_model_limits.model or api_model) this caller may use; null means every model.';
comment on column public.google_ai_callers.last_used_at is
'When the gateway last identified this caller, to the minute (refreshed at most once a minute).';

alter table public.google_ai_callers enable row level security;
revoke all on table public.google_ai_callers from public, anon, authenticated, service_role;
grant select, insert, update, delete on table public.google_ai_callers to service_role;
