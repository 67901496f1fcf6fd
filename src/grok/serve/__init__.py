"""GROK serving: an OpenAI-compatible HTTP API and a web page over one MLLM export (`grok-serve`)."""
