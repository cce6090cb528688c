"""The local stack: a throwaway PostgreSQL shaped like a hosted Supabase project
(``localstack``) and a fake Gemini that counts with Gemma 3's vocabulary (``fake_gemini``,
with Russian and English prose to send it, ``prose``). The operator CLI runs on them
(``llm-limits local``, ``simulate``), and so do ``make demo``, ``make test`` and ``make bench``.
"""
