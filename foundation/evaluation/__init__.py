"""Metrics and plots: jet tagging, anomaly detection, generated-jet quality, tokenizer quality.

tagging.py       AUC, accuracy, background rejection at fixed signal efficiency
anomaly.py       significance improvement (SIC) curves
generation.py    Wasserstein distances, energy flow polynomials, FPD and KPD
tokenization.py  codebook usage and reconstruction of a VQ tokenizer
plots.py         PNG figures of the above
"""
