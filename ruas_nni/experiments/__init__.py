"""NNI experiments: the strategy comparison, multi-trial NAS, the trial entry point and the report.

Imports NNI and every layer below (search, training, inference, model, base).
"""
