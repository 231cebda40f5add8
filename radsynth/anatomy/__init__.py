"""Anatomy: a landmark model trained on the atlas's own 23 CSXA keypoints, the landmarking metrics
(MRE, SDR, the mean-shape baseline) and the geometry measured from landmarks (C2-C7 angle,
curvature class, vertebral body heights and depths); and what the model measures of synthetic
images: anatomical fidelity (`fidelity`, `fidelity_stage`), utility for landmarking (`utility`),
a two-sample classifier (`two_sample`) and the per-image landmark table (`landmark_export`);
`stage` holds the workflow's entry points and `tables` the result tables' formats, which later
stages read. The anatomical screen that uses these tables is the
audit stage's (`radsynth.audit.anatomy_screen`, measured on `radsynth.audit.corruptions`)."""
