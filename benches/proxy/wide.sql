-- The wide-result workload: 1,000 rows of six columns (~110 bytes a row) per query, from a
-- random starting point. Every row carries an e-mail address, which the gateway's masker
-- detects and tokenizes, so the gateway rewrites every row it relays.
\set off random(0, 19000)
SELECT id, name, email, city, note, amount FROM wide WHERE id > :off ORDER BY id LIMIT 1000;
