"""SQL of the built-in tasks, one file per task."""
