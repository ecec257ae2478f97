"""Anomaly scores: every score of embeddings (cosine to the centre, k-NN over training embeddings)
and of the AE's reconstruction errors, and the deployed model that scores clips and recordings."""
