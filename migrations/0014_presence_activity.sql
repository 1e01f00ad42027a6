-- Presence activity moved to Redis (or memory): the database keeps only
-- state changes. The sweeper's reconciliation pages through the users whose
-- state is not offline; this index keeps that cheap when most are offline.
CREATE INDEX presence_present ON presence (user_id) WHERE presence <> 'offline';
