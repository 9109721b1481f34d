"""Reproducible benchmarks: the few-label protocol (`few_label`) and its plot.

The protocol: docs/explanation/method.md, "How the defaults were chosen".
"""
