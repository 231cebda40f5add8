"""radsynth: reproducible DDPM synthesis and audit of radiographs."""

__version__ = "0.1.0"
