"""The edge: an OpenAI-compatible speech API in front of vLLM serving Voxtral."""
