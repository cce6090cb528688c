-- The bot's own usage history (a table production had; adopted). A commit
-- (settle, through record_token_usage) appends one row per committed call in
-- the llm_logger shape. llm-limits never trims it.

create table public.token_usage (
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

alter table public.token_usage enable row level security;
revoke all on table public.token_usage from public, anon, authenticated, service_role;
grant select, insert, update, delete on table public.token_usage to service_role;
revoke all on sequence public.token_usage_id_seq from public, anon, authenticated;
