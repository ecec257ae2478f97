"""Tensors → tensors: tokenizer, selective-scan backends, bidirectional SSM (Audio-Mamba) encoder,
AST-style encoder, heads, the DCASE autoencoder baseline and checkpoint save/load.

Imports neither ``data`` nor ``bohb_search``.
"""
