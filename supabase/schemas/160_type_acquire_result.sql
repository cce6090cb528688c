-- What acquire() returns: a verdict, never an exception for a refusal (a
-- raise would roll back the refusal's audit row), and a WAIT's ticket, its
-- place in line.

create type public.acquire_result as (
    granted boolean,
    reservation_id uuid,
    key_alias text,
    env_var_name text,
    model text,
    waited_ms integer,
    reason text,
    retry_after_ms integer,
    ticket uuid,
    -- While queued: the place in line (1 = next) and when the turn is expected.
    queue_position integer,
    expected_wait_ms integer
);

comment on type public.acquire_result is
'Verdict of acquire(): a grant (reservation_id, key) or a refusal (reason, retry_after_ms); while queued, the place in line and the expected wait.';
