"""Backends: the only places that talk to models, servers or weights."""
