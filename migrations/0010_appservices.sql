-- Application services: each database forms and delivers the transactions
-- of its own stream (see ARCHITECTURE.md, "Application services"). Both
-- tables have rows per appservice on every database, like `push_cursor`.

----------------------------------------------------------- one per database

-- How far this database's stream has been formed into transactions for an
-- appservice. A row is created at the current head when an appservice is
-- first seen: history from before its registration is not sent.
CREATE TABLE appservice_streams (
    appservice_id TEXT PRIMARY KEY,
    pos           BIGINT NOT NULL
);

-- Transactions formed but not yet accepted by the appservice, written in
-- the transaction that moves `appservice_streams.pos` past what they
-- carry, deleted only once the appservice answered 2xx. `upto` is the
-- stream position the transaction covers up to; the transaction id is
-- `<database index>.<upto>`, so a retry resends the same id and body.
CREATE TABLE appservice_txns (
    appservice_id TEXT NOT NULL,
    upto          BIGINT NOT NULL,
    body          JSONB NOT NULL,
    PRIMARY KEY (appservice_id, upto)
);

-- Receipts and to-device messages of a whole database by position, for
-- the ephemeral part of transactions (MSC2409).
CREATE INDEX receipts_stream_pos ON receipts (stream_pos);
CREATE INDEX to_device_messages_stream_pos ON to_device_messages (stream_pos);
