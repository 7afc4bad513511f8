"""Clients of vLLM: its OpenAI HTTP API, its `/v1/realtime` WebSocket, and the served model names."""
