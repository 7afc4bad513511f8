"""Identifiers in OpenAI's style: a prefix and random hex (`item_…`, `event_…`, `resp_…`)."""

import secrets


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"
