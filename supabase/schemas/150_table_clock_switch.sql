-- Only the owner decides what time the RPCs see. Custom settings such as
-- llm_limits.now and llm_limits.clock_skew can be set by any session, so
-- google_ai_internal.clock() honours them only while this owner-only switch
-- is on: a table no role but the owner can read or write. The schema leaves
-- it off; a test database turns it on (CONTRIBUTING.md, "Steering the clock in tests").

create table google_ai_internal.clock_switch (
    id boolean primary key default true check (id),
    steerable boolean not null default false,
    updated_at timestamptz not null default now()
);

comment on table google_ai_internal.clock_switch is
'Owner-only test switch: while steerable is true, the settings llm_limits.now and llm_limits.clock_skew steer google_ai_internal.clock(). Off in every deployed project.';

-- The row is part of the schema. Inserted before the audit trigger exists.
insert into google_ai_internal.clock_switch (id) values (true)
on conflict (id) do nothing;

alter table google_ai_internal.clock_switch enable row level security;
revoke all on table google_ai_internal.clock_switch
from public, anon, authenticated, service_role;
