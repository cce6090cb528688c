-- The seed migration adds Google's published limits for the bot's models.
begin;
select plan(2);

select results_eq(
    $$select m.api_model, m.rpm, m.tpm, m.rpd
      from public.google_ai_model_limits as m where m.model = 'gemma-3-27b'$$,
    $$values ('gemma-3-27b-it'::text, 30, 15000, 14400)$$,
    'gemma-3-27b: 30 RPM / 15,000 TPM / 14,400 RPD, called as gemma-3-27b-it'
);
select results_eq(
    $$select m.api_model, m.rpm, m.tpm, m.rpd
      from public.google_ai_model_limits as m where m.model = 'gemini-2.5-flash'$$,
    $$values ('gemini-2.5-flash'::text, 5, 250000, 20)$$,
    'gemini-2.5-flash: 5 RPM / 250,000 TPM / 20 RPD'
);

select * from finish();
rollback;
