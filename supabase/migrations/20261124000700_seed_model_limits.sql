-- Google's published limits for the models the bot uses (free tier, also
-- Tier 1 for Gemma). Rows that already exist, under either name, are left
-- exactly as the operator set them.

insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd)
select v.model, v.api_model, v.rpm, v.tpm, v.rpd
from (
    values
    ('gemma-3-27b', 'gemma-3-27b-it', 30, 15000, 14400),
    ('gemini-2.5-flash', 'gemini-2.5-flash', 5, 250000, 20)
) as v (model, api_model, rpm, tpm, rpd)
where not exists (
    select from public.google_ai_model_limits as m
    where m.model in (v.model, v.api_model) or m.api_model in (v.model, v.api_model)
);
