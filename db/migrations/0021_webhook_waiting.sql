-- The webhooks still waiting to be processed, in arrival (id) order. The
-- intake asks for the oldest of them after every batch; without this index
-- it would gather and sort every waiting row each time, which grows with
-- the backlog just when a burst has built one. Rows leave the index when
-- they are processed, so it stays as small as the backlog.
CREATE INDEX webhook_events_waiting_idx ON webhook_events (source, status) WHERE status = 'accepted';
