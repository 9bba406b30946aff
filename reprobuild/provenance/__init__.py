"""reprobuild.provenance: attestations binding a model, an engine and a manifest into one signed-off statement."""
