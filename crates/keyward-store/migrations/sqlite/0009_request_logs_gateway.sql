-- Gateway mode (`keyward proxy`) logs the request it verified: its method
-- and path (never the query, which may carry secrets). NULL for
-- verifications over `POST /v1/verify`, which sees no request line. Keep in
-- step with ../postgres/0009_request_logs_gateway.sql.
ALTER TABLE request_logs ADD COLUMN method TEXT;
ALTER TABLE request_logs ADD COLUMN path TEXT;
