"""The HTTP API's request bodies as pydantic models, and their description for the OpenAPI document."""
