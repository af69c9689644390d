"""The RUAS network in plain PyTorch: operations, network, genotype, export and checkpoints.

Imports only torch and :mod:`ruas_nni.base`; never NNI or Lightning.
"""
