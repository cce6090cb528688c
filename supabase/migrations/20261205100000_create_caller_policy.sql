-- Caller policy as rows: classes (priority, reserves, fallback), which class a
-- caller belongs to (and logins pinned to a caller), daily budgets per caller
-- and model with their usage, and fallback chains between models. The ledger
-- records each grant's class (reserves count the window per class), and a
-- ticket its class and priority (the queue serves by priority). Written from
-- supabase/schemas (010, 060, 140, 152-158, 270, 280).

alter table public.google_ai_settings
add column aging_ms integer not null default 60000
check (aging_ms between 1000 and 86400000);

comment on column public.google_ai_settings.aging_ms is
'Aging of the WAIT queues: a waiter''s class priority falls linearly to the top (0) over this long, so no class starves: after aging_ms a waiter is served before everyone who joined after it.';

-- Null for the grants before classes; no index: a commit's update stays HOT.
alter table public.google_ai_reservations add column caller_class text;

comment on column public.google_ai_reservations.caller_class is
'The caller''s class at grant (reserves count the window per class). Null for grants before caller classes.';

-- Pacing of the classes below an active higher one (try_reserve).
alter table public.google_ai_quota_state
add column paced_until timestamptz,
add column lead_priority integer,
add column lead_at timestamptz;

-- Live waiters keep their place: they join as default (priority 50).
alter table google_ai_internal.wait_tickets
add column priority integer not null default 50,
add column caller_class text;

comment on column google_ai_internal.wait_tickets.priority is
'The waiter''s class priority when it joined (lower is served first; aging lowers it further, see queue_rank).';

-- Caller classes: who is served first, and what share of each limit a class
-- keeps from the classes below it. A class's reserve is the fraction of a
-- limit that lower-priority classes may not take: with interactive's
-- rpm_reserve 0.5, the classes below it use at most half of RPM together.
-- RPM and TPM reserves are lent out while the class is idle (no grant in the
-- window and nobody waiting), so an idle bot costs the batch nothing; an RPD
-- reserve is never lent (the day is too long to give back in time).

create table public.google_ai_caller_classes (
    name text primary key check (name ~ '^[a-z][a-z0-9_-]{0,62}$'),
    -- Lower is served first.
    priority integer not null check (priority between 0 and 1000),
    rpm_reserve numeric(4, 3) not null default 0 check (rpm_reserve between 0 and 1),
    tpm_reserve numeric(4, 3) not null default 0 check (tpm_reserve between 0 and 1),
    rpd_reserve numeric(4, 3) not null default 0 check (rpd_reserve between 0 and 1),
    may_fall_back boolean not null default false,
    notes text,
    updated_at timestamptz not null default now()
);

comment on table public.google_ai_caller_classes is
'Caller classes: priority (lower is served first), the fraction of RPM/TPM/RPD that lower-priority classes may not take (RPM/TPM lent while the class is idle), and whether the class may fall back to another model.';

-- The three classes every deployment has. `default` is the class of a caller
-- no policy row names; it cannot be deleted while policies point at it.
insert into public.google_ai_caller_classes (name, priority, may_fall_back, notes) values
('interactive', 10, true, 'people waiting for an answer (the Telegram bot)'),
('default', 50, false, 'callers no policy names'),
('batch', 90, false, 'notebooks and other bulk work')
on conflict (name) do nothing;

alter table public.google_ai_caller_classes enable row level security;
revoke all on table public.google_ai_caller_classes from public, anon, authenticated, service_role;
grant select, insert, update, delete on table public.google_ai_caller_classes to service_role;

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

-- Daily budgets per caller and model (the Pacific day, like RPD): at most
-- `requests` grants and `input_tokens` estimated input tokens a day. Past it
-- acquire() refuses with reason caller_budget until the next day starts.
-- Only callers with a budget row have a usage row: the hot path of everyone
-- else writes nothing more.

create table public.google_ai_caller_budgets (
    caller text not null check (pg_catalog.length(caller) between 1 and 200),
    model text not null references public.google_ai_model_limits (model)
    on update cascade on delete cascade,
    requests integer check (requests >= 0),
    input_tokens bigint check (input_tokens >= 0),
    updated_at timestamptz not null default now(),
    primary key (caller, model)
);

create index google_ai_caller_budgets_model_idx on public.google_ai_caller_budgets (model);

comment on table public.google_ai_caller_budgets is
'Daily budgets per caller and model (Pacific day): grants and estimated input tokens; null means unlimited.';

-- What a budgeted caller has spent on a day. Grants count at once; a refund
-- (a release of an unsent call) gives nothing back: the budget is the
-- caller's promise of restraint, not Google's count.
create table public.google_ai_caller_usage (
    caller text not null,
    model text not null,
    day date not null,
    requests integer not null default 0,
    input_tokens bigint not null default 0,
    primary key (caller, model, day)
);

comment on table public.google_ai_caller_usage is
'Grants and estimated input tokens per budgeted caller, model and Pacific day (acquire keeps it: one row a day per budgeted caller and model).';

alter table public.google_ai_caller_budgets enable row level security;
alter table public.google_ai_caller_usage enable row level security;
revoke all on table public.google_ai_caller_budgets from public, anon, authenticated, service_role;
grant select, insert, update, delete on table public.google_ai_caller_budgets to service_role;
revoke all on table public.google_ai_caller_usage from public, anon, authenticated, service_role;
grant select on table public.google_ai_caller_usage to service_role;

-- Fallback chains: when a caller whose class may fall back would be refused
-- for `model`, acquire() tries `fallback_model` (and its own fallback, up to
-- four steps) within the same wait. The grant names the model served.

create table public.google_ai_fallbacks (
    model text primary key references public.google_ai_model_limits (model)
    on update cascade on delete cascade,
    fallback_model text not null references public.google_ai_model_limits (model)
    on update cascade on delete cascade,
    updated_at timestamptz not null default now(),
    check (fallback_model <> model)
);

create index google_ai_fallbacks_fallback_idx on public.google_ai_fallbacks (fallback_model);

comment on table public.google_ai_fallbacks is
'model -> the model to serve instead when a caller whose class may fall back would be refused (chains follow, at most four steps, never in a loop).';

alter table public.google_ai_fallbacks enable row level security;
revoke all on table public.google_ai_fallbacks from public, anon, authenticated, service_role;
grant select, insert, update, delete on table public.google_ai_fallbacks to service_role;

-- Configuration edits are audited and touched like the other config tables.
create trigger google_ai_caller_classes_audit
after insert or update or delete on public.google_ai_caller_classes
for each row execute function google_ai_internal.audit_config_change();

create trigger google_ai_caller_policies_audit
after insert or update or delete on public.google_ai_caller_policies
for each row execute function google_ai_internal.audit_config_change();

create trigger google_ai_caller_budgets_audit
after insert or update or delete on public.google_ai_caller_budgets
for each row execute function google_ai_internal.audit_config_change();

create trigger google_ai_fallbacks_audit
after insert or update or delete on public.google_ai_fallbacks
for each row execute function google_ai_internal.audit_config_change();

create trigger google_ai_caller_classes_touch
before update on public.google_ai_caller_classes
for each row execute function google_ai_internal.touch_updated_at();

create trigger google_ai_caller_policies_touch
before update on public.google_ai_caller_policies
for each row execute function google_ai_internal.touch_updated_at();

create trigger google_ai_caller_budgets_touch
before update on public.google_ai_caller_budgets
for each row execute function google_ai_internal.touch_updated_at();

create trigger google_ai_fallbacks_touch
before update on public.google_ai_fallbacks
for each row execute function google_ai_internal.touch_updated_at();

-- The Free-tier sibling of gemma-3-27b, and the chain the bot falls back on.
-- Rows an operator already has are kept.
insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd)
values ('gemma-3-12b', 'gemma-3-12b-it', 30, 15000, 14400)
on conflict (model) do nothing;
insert into public.google_ai_fallbacks (model, fallback_model)
select 'gemma-3-27b' as model, 'gemma-3-12b' as fallback_model
where exists (select from public.google_ai_model_limits where model = 'gemma-3-27b')
on conflict (model) do nothing;
