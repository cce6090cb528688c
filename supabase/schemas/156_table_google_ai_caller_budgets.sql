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
