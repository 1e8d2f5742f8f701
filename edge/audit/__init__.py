"""The audit log a parent can verify: hash-chained, signed, and free of anything it describes."""
