-- A key group that may serve a request, with its effective limits (the group
-- override, else the model's). google_ai_internal.candidates() lists them
-- best first.

create type google_ai_internal.candidate as (
    quota_group text,
    key_alias text,
    env_var_name text,
    priority integer,
    rpm integer,
    tpm integer,
    rpd integer
);
