"""Developer tools run from a checkout (benchmarks, demo data): never shipped in the QGIS ZIP."""
