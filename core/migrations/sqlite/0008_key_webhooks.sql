-- An API key may carry a default `webhook_url` for the uploads made with it (an upload's own
-- `webhook_url` wins). Checked like an upload's when the key is made.
ALTER TABLE api_keys ADD COLUMN webhook_url TEXT;
