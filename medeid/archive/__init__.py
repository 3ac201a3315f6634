"""Bulk anonymization of hospital photo archives (issue 6): formats, manifest, the job's stages."""
