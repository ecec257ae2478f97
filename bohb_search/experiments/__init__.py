"""Experiments over many runs: the paper's Table 1 ablation and the comparison of searchers at an
equal epoch budget (their command-line parts live in ``bohb_search.cli``)."""
