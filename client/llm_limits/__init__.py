"""llm-limits: a Supabase-native quota controller for the Google AI API."""
