"""Audit stage: the plausibility screen, screening manifests and their review, and the
memorization audit of sampled sets against the atlas."""
