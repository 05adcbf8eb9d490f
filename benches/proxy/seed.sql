-- The table behind the wide-result workload (pgbench -i creates the -S tables).
SET client_min_messages = warning;
DROP TABLE IF EXISTS wide;
CREATE TABLE wide (
    id int PRIMARY KEY,
    name text NOT NULL,
    email text NOT NULL,
    city text NOT NULL,
    note text NOT NULL,
    amount numeric(10, 2) NOT NULL
);
INSERT INTO wide
SELECT g,
       'customer ' || g,
       'user' || g || '@example.com',
       (ARRAY['Lisbon', 'Oslo', 'Quito', 'Perth', 'Nairobi'])[1 + g % 5],
       'order notes for account ' || g || ', nothing sensitive here',
       (g % 1000) * 1.25
FROM generate_series(1, 20000) AS g;
ANALYZE wide;
