"""Sampling stage: resumable Zarr shards, the facing classifier and left-facing gather."""
