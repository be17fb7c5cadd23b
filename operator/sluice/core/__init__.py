"""The pure core: given what is observed, decide what to do. No I/O here."""
