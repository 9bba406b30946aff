"""reprobuild.environment: what the machine contributes to numerics — the fingerprint a build records
(``fingerprint``) and the policy that compares two fingerprints (``policy``)."""
