-- Per-model quotas (adopted from production; the first migration adds
-- api_model). Callers may name a model by its row (`gemma-3-27b`) or by the
-- id the API expects (`gemma-3-27b-it`); both resolve to one row and one
-- quota. The default rows (Google's free tier) are seed data: see
-- supabase/schemas/README.md.

create table public.google_ai_model_limits (
    id bigint generated always as identity primary key,
    model text not null,
    rpm integer,
    tpm integer,
    rpd integer,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    api_model text,
    token_counter text
    constraint google_ai_model_limits_token_counter_check
    check (token_counter in ('gemma3', 'count_tokens', 'bytes'))
);

create unique index google_ai_model_limits_model_key
on public.google_ai_model_limits (model);

comment on table public.google_ai_model_limits is
'Per-model quotas (Google free tier by default). A null limit is not enforced. Per-project overrides live in google_ai_group_limits.';
comment on column public.google_ai_model_limits.api_model is
'The model id sent to the API (e.g. gemma-3-27b-it). Callers may pass either this or model.';
comment on column public.google_ai_model_limits.token_counter is
'How the client counts input tokens before acquire: gemma3 (Gemma 3 SentencePiece via google-genai LocalTokenizer), count_tokens (models.count_tokens over HTTP), bytes (UTF-8 byte bound). Null: automatic (gemma3 where the tokenizer serves the model, else count_tokens, else bytes).';

alter table public.google_ai_model_limits enable row level security;
revoke all on table public.google_ai_model_limits from public, anon, authenticated, service_role;
grant select, insert, update, delete on table public.google_ai_model_limits to service_role;
revoke all on sequence public.google_ai_model_limits_id_seq from public, anon, authenticated;
