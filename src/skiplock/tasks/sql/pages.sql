-- The pages scrape stores: one row per requested URL.

-- name: page_upsert
INSERT INTO pages (url, final_url, status, content_type, title, description, headings, links, scraped_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now())
ON CONFLICT (url) DO UPDATE SET
    final_url = excluded.final_url, status = excluded.status, content_type = excluded.content_type,
    title = excluded.title, description = excluded.description, headings = excluded.headings,
    links = excluded.links, scraped_at = excluded.scraped_at

-- name: page_get
SELECT url, final_url, status, content_type, title, description, headings, links, scraped_at
FROM pages WHERE url = $1
