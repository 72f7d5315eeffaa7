"""Training on ŷ (or pixels, for the baselines): classification, detection and segmentation
loops, their input specs and metrics, and TFA few-shot classification and detection.

It may import the loader, models, shards, sources, images, convert and the codec; evaluation
(`pipeline.eval`) builds on it, never the other way.
"""
