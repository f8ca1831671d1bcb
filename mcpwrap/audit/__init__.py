"""The audit log: one module turns decisions into records (recorder), the writer chains
them, and the reader verifies and reports them."""
