-- Which class a caller belongs to. A caller is the name acquire() is given
-- (`caller`): the bot's name, a notebook's, a gateway caller's token row
-- name. A name no row holds is in class `default`.
--
-- login_role pins a database login to one caller: a session whose login
-- (session_user) is that role acts as this caller whatever `caller` it
-- passes, so a notebook's login cannot claim the bot's class.

create table public.google_ai_caller_policies (
    caller text primary key check (pg_catalog.length(caller) between 1 and 200),
    caller_class text not null references public.google_ai_caller_classes (name)
    on update cascade,
    login_role text unique,
    notes text,
    updated_at timestamptz not null default now()
);

create index google_ai_caller_policies_class_idx
on public.google_ai_caller_policies (caller_class);

comment on table public.google_ai_caller_policies is
'Caller name -> caller class (no row: default). login_role pins a database login to this caller name.';

alter table public.google_ai_caller_policies enable row level security;
revoke all on table public.google_ai_caller_policies from public, anon, authenticated, service_role;
grant select, insert, update, delete on table public.google_ai_caller_policies to service_role;
