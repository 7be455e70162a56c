"""`python -m export`: the export command line of a source checkout (`keras_preact.export.cli`)."""
