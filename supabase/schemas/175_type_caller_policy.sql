-- What acquire() needs to know about its caller, read once per call
-- (google_ai_internal.caller_policy): the caller name after a login pin, its
-- class and priority, whether it may fall back, and the reserves of the
-- classes above it.

create type google_ai_internal.caller_policy as (
    caller text,
    caller_class text,
    priority integer,
    may_fall_back boolean,
    -- Higher-priority classes with an RPM or TPM reserve, and those reserves.
    higher_classes text [],
    higher_rpm numeric [],
    higher_tpm numeric [],
    -- The share of RPD this caller's class and those below it may use:
    -- 1 minus the RPD reserves of every higher-priority class.
    rpd_share numeric,
    -- Whether some class that ranks above this one has a caller assigned to
    -- it (a policy row): then this one is paced and leaves headroom.
    paced boolean,
    -- How long a WAIT on the model asked for may last before a model of the
    -- fallback chain that can grant at once serves it (null: only at a
    -- final refusal).
    fallback_after_ms integer,
    -- The models this caller has a daily budget for (google_ai_caller_budgets).
    budget_models text [],
    -- The limits of one end user of this caller, per minute and per Pacific
    -- day across models: the class's defaults, or the person's own row.
    end_user_rpm integer,
    end_user_rpd integer,
    -- The keyed hash of acquire's end_user (null: none was passed), and
    -- whether that person is blocked.
    end_user_hash bytea,
    end_user_blocked boolean
);
