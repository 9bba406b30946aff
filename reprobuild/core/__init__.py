"""reprobuild.core: the leaf of the import graph — errors, logging, dtypes, digests, file I/O, text tables, bounded
validation and versions. It imports nothing else of reprobuild, so every layer above may use it."""
