"""Shared types and infrastructure: settings, errors, metrics, API keys, audio decoding, task groups.

Imports nothing of the server above it.
"""
