"""What edge keeps on disk: private files, the keystore, sealed recordings."""
