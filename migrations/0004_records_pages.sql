-- Placeholder on branch `imports` only: 0004 belongs to the fetch_api/scrape work (records, pages),
-- built on another branch. Migrations must be numbered without gaps, so this empty file lets
-- 0005_imports apply here; take the other branch's file when merging.
SELECT 1;
