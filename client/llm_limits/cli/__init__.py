"""Operator tooling for llm-limits. Nothing here is imported by ``import llm_limits``."""
