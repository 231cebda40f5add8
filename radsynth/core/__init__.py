"""What every stage shares: atomic file output, tables, figures, provenance, config, logging."""
