"""Files → tensors: DCASE layout reader, audio loading, log-mel front end with cache,
domain-balanced sampling, synthetic machine sounds and the dataset downloader.

Imports neither ``models`` nor ``bohb_search``.
"""
