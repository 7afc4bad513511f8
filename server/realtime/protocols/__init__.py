"""The realtime wire protocols: OpenAI Realtime (its session and event models, and the adapter
that dispatches client events and renders the session's events) and the simple `/ws` one."""
