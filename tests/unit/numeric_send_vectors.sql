-- Produces the reference vectors of test_copybin.c: PostgreSQL's own binary
-- form of each numeric (numeric_send), as hex. Run with psql -At against any
-- PostgreSQL 15 (e.g. "$(prognos db url)").
SELECT v || ' ' || encode(numeric_send(v::numeric), 'hex')
FROM unnest(ARRAY['0', '0.00', '12000.50', '10832.73', '0.05', '-17.5', '1234567.891', '100000000',
                  '0.0001', '007.250', '-0', '99999999.99', '1', '.5']) v;
