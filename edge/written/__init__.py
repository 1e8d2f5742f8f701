"""The household's written retention policy: its terms (from the config and the vault), its
version (a hash of their canonical form), its adoption in the audit log, and its wording."""
