"""Release stage: the figshare package, its privacy gate and dataset card, and the uploader."""
