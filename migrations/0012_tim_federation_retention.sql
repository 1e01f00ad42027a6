-- TI-M federation list (tim/federation_list.rs): the last verified list as
-- the VZD signed it, and when it was last confirmed current (a 204 counts).
-- One row, in database 0; a list not confirmed for 72 h is not trusted.
CREATE TABLE tim_federation_list (
    id           BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
    version      BIGINT NOT NULL,
    jws          TEXT NOT NULL,
    refreshed_ts BIGINT NOT NULL
);

-- TI-M retention (tim/retention.rs): when the job last finished a run over
-- this database, so that of all workers only one runs it per interval (the
-- run itself holds an advisory lock). One row per database.
CREATE TABLE tim_retention_runs (
    id          BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
    finished_ts BIGINT NOT NULL
);
