"""SQL of API keys."""
