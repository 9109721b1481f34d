"""Reproducible benchmarks: the few-label protocol of METHOD.md (`few_label`) and its plot."""
