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
    updated_at timestamptz not null default now(),
    fallback_after_ms integer check (fallback_after_ms between 0 and 86400000),
    end_user_rpm integer check (end_user_rpm >= 0),
    end_user_rpd integer check (end_user_rpd >= 0)
);

comment on table public.google_ai_caller_classes is
'Caller classes: priority (lower is served first), the fraction of RPM/TPM/RPD that lower-priority classes may not take (RPM/TPM lent while the class is idle), and whether the class may fall back to another model.';
comment on column public.google_ai_caller_classes.fallback_after_ms is
'With may_fall_back: how long a WAIT may wait for the model asked for before a model of its fallback chain that can grant at once serves it (null: only when the model asked for refuses).';

-- The three classes every deployment has. `default` is the class of a caller
-- no policy row names; it cannot be deleted while policies point at it.
insert into public.google_ai_caller_classes (name, priority, may_fall_back, notes) values
('interactive', 10, true, 'people waiting for an answer (the Telegram bot)'),
('default', 50, false, 'callers no policy names'),
('batch', 90, false, 'notebooks and other bulk work')
on conflict (name) do nothing;

-- A person waits at most about two seconds for the model asked for while a
-- fallback could answer at once.
update public.google_ai_caller_classes set fallback_after_ms = 2000
where name = 'interactive' and fallback_after_ms is null;

comment on column public.google_ai_caller_classes.end_user_rpm is
'Grants a minute (over the exact sliding window) one end user of a caller of this class may have, across models; a google_ai_end_users row raises, lowers or blocks one person (null: no limit).';
comment on column public.google_ai_caller_classes.end_user_rpd is
'Grants a Pacific day one end user of a caller of this class may have, across models (null: no limit).';

-- A bot's people share about 30 messages a minute: one person gets 6 of them.
update public.google_ai_caller_classes set end_user_rpm = 6, end_user_rpd = 300
where name = 'interactive' and end_user_rpm is null and end_user_rpd is null;

alter table public.google_ai_caller_classes enable row level security;
revoke all on table public.google_ai_caller_classes from public, anon, authenticated, service_role;
grant select, insert, update, delete on table public.google_ai_caller_classes to service_role;
