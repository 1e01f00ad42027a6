-- An outbound message redacted in the room before its mail left is
-- 'withdrawn': taken out of the queue, never sent.
ALTER TABLE messages DROP CONSTRAINT messages_state_check;
ALTER TABLE messages ADD CONSTRAINT messages_state_check
    CHECK (state IN ('queued', 'sent', 'failed', 'posted', 'withdrawn'));
