-- Places in the WAIT lines. A transaction pooler gives every client a server
-- connection for one transaction only, and advisory locks, LISTEN/NOTIFY and
-- backend pids do not survive from one pooled transaction to the next, so a
-- place in line is a committed row, and its owner's liveness a timestamp the
-- owner refreshes each time it calls again.
--
-- One row per caller that waits in line. seq is the FIFO order of a queue
-- (model, key set); due_at is when the owner was told to call back, and the
-- ticket stops holding its place at alive_until (due_at + one slice + grace:
-- a slice because the owner's own call may last that long while others still
-- see the row as it was committed before the call). deadline is when the
-- wait ends, fixed by the ticket's first call.

create table google_ai_internal.wait_tickets (
    id uuid primary key,
    seq bigint generated always as identity,
    model text not null,
    key_set text not null,
    tokens integer not null check (tokens >= 0),
    caller text,
    request_id text,
    created_at timestamptz not null,
    due_at timestamptz not null,
    turn_at timestamptz not null,
    alive_until timestamptz not null,
    rounds integer not null default 0,
    deadline timestamptz not null,
    priority integer not null default 50,
    caller_class text,
    end_user_hash bytea
);

create index wait_tickets_queue_idx on google_ai_internal.wait_tickets (model, key_set, seq);
create index wait_tickets_alive_idx on google_ai_internal.wait_tickets (alive_until);

comment on table google_ai_internal.wait_tickets is
'Places in the WAIT queues of acquire(): FIFO per (model, key set) by seq, alive until alive_until.';
comment on column google_ai_internal.wait_tickets.priority is
'The waiter''s class priority when it joined (lower is served first; a starving class''s old waiters go first, see queue_rank).';
comment on column google_ai_internal.wait_tickets.deadline is
'When the wait ends (its first call''s start plus max_wait_ms; a later call''s max_wait_ms can only bring it closer).';

comment on column google_ai_internal.wait_tickets.end_user_hash is
'The keyed hash of the end user waiting (acquire''s end_user), or null: within a class, people take turns (line_ahead).';

alter table google_ai_internal.wait_tickets enable row level security;
revoke all on table google_ai_internal.wait_tickets from public, anon, authenticated, service_role;
revoke all on sequence google_ai_internal.wait_tickets_seq_seq
from public, anon, authenticated, service_role;
