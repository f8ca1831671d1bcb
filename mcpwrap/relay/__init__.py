"""The relay: a transport-agnostic core (decisions and routing) between ends that carry
bytes: today the stdio front and the server-process upstream (ends.py is the contract)."""
