"""Every SQL statement the operator CLI runs, in one place.

The quota logic lives in the RPCs; the CLI only calls them (``acquire`` excepted: that goes
through ``llm_limits.Client``) and edits the configuration tables, whose triggers write the
``config_changed`` audit rows. Parameters are named and cast explicitly.
"""

from __future__ import annotations

# -- keys ---------------------------------------------------------------------------------------

LIST_KEYS = """
select k.key_alias, k.env_var_name, k.quota_group, k.priority, k.is_active,
       k.disabled_reason, k.notes
from public.google_ai_api_keys as k
order by coalesce(k.quota_group, k.key_alias), k.priority, k.key_alias
"""

# Returns a row only when the key was added (or, with exist_ok, updated).
ADD_KEY = """
insert into public.google_ai_api_keys as k
    (key_alias, env_var_name, quota_group, priority, notes)
values (%(alias)s::text, %(env_var)s::text, %(group)s::text, %(priority)s::integer,
        %(notes)s::text)
on conflict (key_alias) do nothing
returning k.key_alias
"""

ADD_OR_UPDATE_KEY = """
insert into public.google_ai_api_keys as k
    (key_alias, env_var_name, quota_group, priority, notes)
values (%(alias)s::text, %(env_var)s::text, %(group)s::text, %(priority)s::integer,
        %(notes)s::text)
on conflict (key_alias) do update set
    env_var_name = excluded.env_var_name,
    quota_group = excluded.quota_group,
    priority = excluded.priority,
    notes = coalesce(excluded.notes, k.notes)
returning k.key_alias
"""

ENABLE_KEY = (
    "select public.enable_key(key_alias => %(alias)s::text, reason => %(reason)s::text)"
    " as was_disabled"
)

DISABLE_KEY = (
    "select public.disable_key(key_alias => %(alias)s::text, reason => %(reason)s::text)"
    " as was_active"
)

# An empty --group or --notes clears the column (the key becomes its own quota group).
SET_KEY = """
update public.google_ai_api_keys as k set
    quota_group = case when %(group_given)s::boolean
                       then nullif(%(group)s::text, '') else k.quota_group end,
    priority = coalesce(%(priority)s::integer, k.priority),
    env_var_name = coalesce(%(env_var)s::text, k.env_var_name),
    notes = case when %(notes_given)s::boolean then nullif(%(notes)s::text, '') else k.notes end
where k.key_alias = %(alias)s::text
returning k.key_alias
"""

# -- models -------------------------------------------------------------------------------------

LIST_MODELS = """
select m.model, m.api_model, m.rpm, m.tpm, m.rpd,
       coalesce((
           select jsonb_agg(jsonb_build_object(
                      'group', g.quota_group, 'rpm', g.rpm, 'tpm', g.tpm, 'rpd', g.rpd)
                  order by g.quota_group)
           from public.google_ai_group_limits as g
           where g.model = m.model
       ), '[]'::jsonb) as overrides
from public.google_ai_model_limits as m
order by m.model
"""

# The model row a name or API id stands for (public.resolve_model raises LL001 when none does).
RESOLVE_MODEL = """
select m.model, m.api_model, m.rpm, m.tpm, m.rpd
from public.resolve_model(model => %(model)s::text) as r (model)
join public.google_ai_model_limits as m on m.model = r.model
"""

UPDATE_MODEL = """
update public.google_ai_model_limits as m set
    rpm = coalesce(%(rpm)s::integer, m.rpm),
    tpm = coalesce(%(tpm)s::integer, m.tpm),
    rpd = coalesce(%(rpd)s::integer, m.rpd),
    api_model = coalesce(%(api_model)s::text, m.api_model)
where m.model = %(model)s::text
returning m.model
"""

UPSERT_MODEL = """
insert into public.google_ai_model_limits as m (model, api_model, rpm, tpm, rpd)
values (%(model)s::text, coalesce(%(api_model)s::text, %(model)s::text),
        %(rpm)s::integer, %(tpm)s::integer, %(rpd)s::integer)
on conflict (model) do update set
    rpm = coalesce(excluded.rpm, m.rpm),
    tpm = coalesce(excluded.tpm, m.tpm),
    rpd = coalesce(excluded.rpd, m.rpd),
    api_model = coalesce(%(api_model)s::text, m.api_model)
returning m.model
"""

# A null override falls back to google_ai_model_limits, so unspecified limits stay as they were.
UPSERT_GROUP_LIMITS = """
insert into public.google_ai_group_limits as g (quota_group, model, rpm, tpm, rpd)
values (%(group)s::text, %(model)s::text, %(rpm)s::integer, %(tpm)s::integer, %(rpd)s::integer)
on conflict (quota_group, model) do update set
    rpm = coalesce(excluded.rpm, g.rpm),
    tpm = coalesce(excluded.tpm, g.tpm),
    rpd = coalesce(excluded.rpd, g.rpd)
returning g.quota_group
"""

# -- status, audit, maintenance -----------------------------------------------------------------

SETTINGS = """
select s.window_ms, s.window_guard_ms, s.rpd_time_zone, s.learn_limits
from public.google_ai_settings as s
where s.id
"""

QUOTA_STATUS = "select * from public.quota_status()"

STORAGE_STATUS = "select * from public.storage_status()"

OBSERVED_LIMITS = "select * from public.observed_limits()"

# Newest first; the caller reverses the page. By time: the events read from the ledger carry
# ids derived from their reservation, not increasing ones.
AUDIT_PAGE = """
select a.id, a.ts, a.event, a.key_alias, a.model, a.reservation_id, a.actor, a.details
from public.google_ai_audit_log as a
where (%(since)s::timestamptz is null or a.ts >= %(since)s::timestamptz)
  and (%(events)s::text[] is null or a.event = any(%(events)s::text[]))
order by a.ts desc, a.id desc
limit %(limit)s::integer
"""

# --follow re-reads a short overlap: ids are handed out before commit, so a row with a lower id
# can become visible after a higher one. The caller skips ids it has already printed.
AUDIT_SINCE = """
select a.id, a.ts, a.event, a.key_alias, a.model, a.reservation_id, a.actor, a.details
from public.google_ai_audit_log as a
where a.ts >= %(since)s::timestamptz
  and (%(events)s::text[] is null or a.event = any(%(events)s::text[]))
order by a.ts, a.id
limit 5000
"""

AUDIT_EVENT_KINDS = "select e.kind from public.audit_event_kinds() as e (kind)"

RUN_MAINTENANCE = "select public.run_maintenance() as log_row"

# -- report -------------------------------------------------------------------------------------

USAGE_REPORT = """
select r.bucket, r.requests, r.committed, r.input_tokens, r.output_tokens, r.refusals,
       r.refusals_by_reason, r.google_429s, r.wait_p50_ms, r.wait_p95_ms, r.fallbacks,
       r.rolled_up_requests
from public.usage_report(since => %(since)s::timestamptz, until => %(until)s::timestamptz,
                         by => %(by)s::text) as r
"""

# -- callers of the llm-gateway ---------------------------------------------------------------

ADD_CALLER = """
select public.add_caller(name => %(name)s::text, token_sha256 => %(digest)s::bytea,
                         allowed_models => %(models)s::text[], notes => %(notes)s::text) as added
"""

REVOKE_CALLER = "select public.revoke_caller(name => %(name)s::text) as was_active"

LIST_CALLERS = """
select c.name, c.active, c.allowed_models, c.created_at, c.last_used_at, c.notes
from public.google_ai_callers as c
order by c.name
"""

# -- simulate -----------------------------------------------------------------------------------

ACTIVE_KEYS = """
select k.key_alias, k.env_var_name, coalesce(k.quota_group, k.key_alias) as quota_group
from public.google_ai_api_keys as k
where k.is_active is true
order by 3, k.priority, k.key_alias
"""

WAITS_OF_CALLER = """
select (a.details ->> 'waited_ms')::integer as waited_ms
from public.google_ai_audit_log as a
where a.event = 'granted'
  and a.ts >= %(since)s::timestamptz
  and a.details ->> 'caller' = %(caller)s::text
"""

GRANTS_OF_CALLER = """
select r.quota_group, r.granted_at, r.counted_tokens
from public.google_ai_reservations as r
where r.model = %(model)s::text
  and r.granted_at >= %(since)s::timestamptz
  and r.caller = %(caller)s::text
order by r.granted_at
"""

RATE_LIMITED_OF_MODEL = """
select count(*)::integer as n
from public.google_ai_audit_log as a
where a.event = 'rate_limited'
  and a.model = %(model)s::text
  and a.ts >= %(since)s::timestamptz
"""

MIGRATIONS = """
select count(*)::integer as applied, max(m.version) as latest
from supabase_migrations.schema_migrations as m
"""

# -- caller policy: classes, which class a caller is in, budgets, fallback chains --------------

LIST_CLASSES = """
select c.name, c.priority, c.rpm_reserve, c.tpm_reserve, c.rpd_reserve, c.may_fall_back, c.notes,
       coalesce((select array_agg(p.caller order by p.caller)
                 from public.google_ai_caller_policies as p where p.caller_class = c.name), '{}')
           as callers
from public.google_ai_caller_classes as c
order by c.priority, c.name
"""

UPSERT_CLASS = """
insert into public.google_ai_caller_classes as c
    (name, priority, rpm_reserve, tpm_reserve, rpd_reserve, may_fall_back, notes)
values (%(name)s, coalesce(%(priority)s, 50), coalesce(%(rpm_reserve)s, 0),
        coalesce(%(tpm_reserve)s, 0), coalesce(%(rpd_reserve)s, 0),
        coalesce(%(may_fall_back)s, false), %(notes)s)
on conflict (name) do update set
    priority = coalesce(%(priority)s, c.priority),
    rpm_reserve = coalesce(%(rpm_reserve)s, c.rpm_reserve),
    tpm_reserve = coalesce(%(tpm_reserve)s, c.tpm_reserve),
    rpd_reserve = coalesce(%(rpd_reserve)s, c.rpd_reserve),
    may_fall_back = coalesce(%(may_fall_back)s, c.may_fall_back),
    notes = coalesce(%(notes)s, c.notes)
"""

ASSIGN_CALLER = """
insert into public.google_ai_caller_policies as p (caller, caller_class, login_role)
values (%(caller)s, %(class)s, %(login_role)s)
on conflict (caller) do update set
    caller_class = excluded.caller_class,
    login_role = coalesce(excluded.login_role, p.login_role)
"""

LIST_BUDGETS = """
select b.caller, b.model, b.requests, b.input_tokens,
       coalesce(u.requests, 0) as spent_requests, coalesce(u.input_tokens, 0) as spent_tokens
from public.google_ai_caller_budgets as b
left join public.google_ai_caller_usage as u
    on u.caller = b.caller and u.model = b.model
    and u.day = (google_ai_internal.clock() at time zone (
        select s.rpd_time_zone from public.google_ai_settings as s where s.id))::date
order by b.caller, b.model
"""

UPSERT_BUDGET = """
insert into public.google_ai_caller_budgets as b (caller, model, requests, input_tokens)
values (%(caller)s, %(model)s, %(requests)s, %(input_tokens)s)
on conflict (caller, model) do update set
    requests = excluded.requests, input_tokens = excluded.input_tokens
"""

DELETE_BUDGET = """
delete from public.google_ai_caller_budgets where caller = %(caller)s and model = %(model)s
"""

LIST_FALLBACKS = """
select f.model, google_ai_internal.fallback_chain(f.model) as chain
from public.google_ai_fallbacks as f order by f.model
"""

UPSERT_FALLBACK = """
insert into public.google_ai_fallbacks (model, fallback_model) values (%(model)s, %(fallback)s)
on conflict (model) do update set fallback_model = excluded.fallback_model
"""

DELETE_FALLBACK = "delete from public.google_ai_fallbacks where model = %(model)s"

CLASS_STATUS = "select * from public.class_status()"

# -- end users: by the keyed hash of the id the bot passes (the RPCs hash it) ----------------

LIST_END_USERS = """
select e.end_user, e.rpm, e.rpd, e.blocked, e.notes, e.requests_today, e.requests_in_window,
       e.waiting
from public.end_users() as e
limit %(top)s::integer
"""

LIMIT_END_USER = """
select public.limit_end_user(end_user => %(end_user)s::text, rpm => %(rpm)s::integer,
                             rpd => %(rpd)s::integer, notes => %(notes)s::text) as label
"""

# The label is the first 8 hex digits of the hash, as public.end_users() and the report show it.
BLOCK_END_USER = """
select public.block_end_user(end_user => %(end_user)s::text, notes => %(notes)s::text)
           as changed,
       public.end_user_label(end_user => %(end_user)s::text) as label
"""

UNBLOCK_END_USER = """
select public.unblock_end_user(end_user => %(end_user)s::text) as changed,
       public.end_user_label(end_user => %(end_user)s::text) as label
"""
