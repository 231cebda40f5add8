"""Demo stage: a seeded procedural atlas of lateral c-spine phantoms in CSXA's on-disk format."""
