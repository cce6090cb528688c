-- Per-person rules for the end users of a bot (acquire's end_user), by the
-- keyed hash of their id (google_ai_internal.end_user_hash): a row raises or
-- lowers one person's limits below or above their caller class's defaults
-- (end_user_rpm, end_user_rpd; null here: the class's), or blocks them.
-- Operators edit it through public.limit_end_user, block_end_user and
-- unblock_end_user, which take the raw id; every change is audited as
-- config_changed (the audit shows the hash's prefix only).

create table public.google_ai_end_users (
    end_user_hash bytea primary key check (pg_catalog.length(end_user_hash) = 16),
    rpm integer check (rpm >= 0),
    rpd integer check (rpd >= 0),
    blocked boolean not null default false,
    notes text check (pg_catalog.length(notes) <= 500),
    updated_at timestamptz not null default now()
);

comment on table public.google_ai_end_users is
'Per-person limits and blocks for a bot''s end users, by the keyed hash of their id: rpm, rpd (null: the caller class''s end_user_rpm, end_user_rpd), blocked.';

alter table public.google_ai_end_users enable row level security;
revoke all on table public.google_ai_end_users from public, anon, authenticated, service_role;
grant select on table public.google_ai_end_users to service_role;
