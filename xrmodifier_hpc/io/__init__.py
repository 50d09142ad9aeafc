"""File formats: OGIP spectra and responses, observation tables, the HDF5 grid store, atomic
writes and the built-in synthetic instrument pair. Reads files into data objects; computes no
physics."""
