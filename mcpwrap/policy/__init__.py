"""Pure decisions: a message (or a profile) in, a verdict out. Tools, arguments, network,
SQL, poisoning, sanitising, and how much more one profile grants than another."""
