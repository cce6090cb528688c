-- The key of the keyed hash that stands for a bot's end user
-- (google_ai_internal.end_user_hash): the database never holds a person's raw
-- id, only HMAC-SHA256(id, this key), cut to 16 bytes. Generated once, at
-- install, and readable by no role but the owner: a copy of the ledger or
-- the audit log without it cannot be turned back into Telegram ids by
-- hashing every candidate. Kept apart from google_ai_settings, whose audit
-- trail copies whole rows. Replacing it makes every person a new one
-- (their per-person rows no longer match).

create table google_ai_internal.end_user_hash_key (
    id boolean primary key default true check (id),
    hash_key bytea not null default extensions.gen_random_bytes(32)
    check (pg_catalog.length(hash_key) >= 32),
    created_at timestamptz not null default now()
);

comment on table google_ai_internal.end_user_hash_key is
'The secret key of the end-user hash (one row, generated at install; no role but the owner reads it).';

-- The row is part of the schema: end_user_hash() reads it.
insert into google_ai_internal.end_user_hash_key (id) values (true)
on conflict (id) do nothing;

alter table google_ai_internal.end_user_hash_key enable row level security;
revoke all on table google_ai_internal.end_user_hash_key
from public, anon, authenticated, service_role;
