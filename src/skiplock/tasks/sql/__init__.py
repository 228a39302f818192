"""SQL of fetch_api and scrape, one file per task (import_csv keeps its own in its package)."""
