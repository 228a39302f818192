"""make bench: skiplock's engine measured against bare asyncpg doing the same work."""
