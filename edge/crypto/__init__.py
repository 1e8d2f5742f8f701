"""Cryptography: the age file format, the kernel keyring, and the vault for the root key."""
