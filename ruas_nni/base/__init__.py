"""The bottom layer: errors, atomic file writes, typed YAML configs, image reading and writing.

Imports only the standard library, torch, numpy, PIL and yaml; never another ``ruas_nni`` layer.
"""
