"""Readers of public jet data sets (top tagging landscape HDF5, JetClass ROOT), each a JetSource."""
