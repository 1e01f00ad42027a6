-- TI-M ePA account kinds (user-scoped, see tim/accounts.rs): an account
-- with a KVNR (the unchangeable part of the Krankenversichertennummer) is an
-- insured person's; one without belongs to the insurer (staff, functional
-- accounts). Existing accounts are staff.
ALTER TABLE users ADD COLUMN kvnr TEXT CHECK (kvnr ~ '^[A-Z][0-9]{9}$');
