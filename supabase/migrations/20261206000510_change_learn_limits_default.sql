-- Learned limits fix themselves by default: learn_limits defaults to 'apply'.
-- A 429's quotaValue below the configured limit lowers the quota group's
-- limit (never raises one; audited as limit_observed and as a config change;
-- shown by `llm-limits status`), so a limit set above Google's costs one 429
-- instead of one per window. Written from supabase/schemas (010).
--
-- An existing deployment's row: 'suggest' was the default until now, so a
-- row holding it was usually never chosen. It becomes 'apply', unless the
-- audit stream shows someone set 'suggest' on purpose (a config change of
-- google_ai_settings to it); 'off' and 'apply' were chosen and stay. The
-- change goes through the config audit trigger, so `llm-limits audit` shows
-- it, and `update public.google_ai_settings set learn_limits = 'suggest'`
-- undoes it. A choice older than audit_retention is no longer on record and
-- is taken for the old default.

alter table public.google_ai_settings
alter column learn_limits set default 'apply';

comment on column public.google_ai_settings.learn_limits is
'What a 429 whose quotaValue differs from the configured limit does: off (nothing), suggest (audit limit_observed), apply (the default: also lower the quota group''s limit, audited as a config change; never raises one), so a limit set above Google''s costs one 429.';

update public.google_ai_settings as s
set learn_limits = 'apply'
where
    s.learn_limits = 'suggest'
    and not exists (
        select
        from public.google_ai_audit_records as a
        where
            a.event = 'config_changed'
            and a.details ->> 'table' = 'google_ai_settings'
            and a.details -> 'new' ->> 'learn_limits' = 'suggest'
            and a.details -> 'old' ->> 'learn_limits' is distinct from 'suggest'
    );
