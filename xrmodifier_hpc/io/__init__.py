"""File formats read and written.

OGIP spectra and responses, table models, observation tables, the HDF5 grid store, shard
files, atomic writes, artefact paths and typed records, and the built-in synthetic instrument
pair. Reads files into data objects; computes no physics.
"""
