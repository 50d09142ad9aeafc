"""Inference: from observed temperature pairs to the posterior of theta, and what follows.

The likelihood of the observed temperature pairs, the multi-start optimiser, the posterior
sampler, and what is derived from the posterior (pointwise ARF-multiplier bands and
ensembles, identifiability). Pure computation: no files, no MPI.
"""
