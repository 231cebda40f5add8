"""Training stage: the DDPM network, noise schedule, EMA, checkpoint files, loop and selection."""
