"""Process supervision: the launcher of vLLM and the edge, and the tiny test model."""
