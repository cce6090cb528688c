-- A paid-tier project gets its own numbers for a model; null falls back to
-- google_ai_model_limits.

create table public.google_ai_group_limits (
    quota_group text not null,
    model text not null references public.google_ai_model_limits (model)
    on update cascade on delete cascade,
    rpm integer check (rpm >= 0),
    tpm integer check (tpm >= 0),
    rpd integer check (rpd >= 0),
    updated_at timestamptz not null default now(),
    primary key (quota_group, model)
);

create index google_ai_group_limits_model_idx on public.google_ai_group_limits (model);

comment on table public.google_ai_group_limits is
'Per quota group (Cloud project) overrides of google_ai_model_limits, e.g. for a paid tier.';

alter table public.google_ai_group_limits enable row level security;
revoke all on table public.google_ai_group_limits from public, anon, authenticated, service_role;
grant select, insert, update, delete on table public.google_ai_group_limits to service_role;
