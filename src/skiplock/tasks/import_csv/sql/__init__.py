"""SQL of the CSV import: the imports, their chunks and failed rows, the staged load."""
