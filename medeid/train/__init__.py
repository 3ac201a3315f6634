"""Ray Train: data feeding, the shared trainer harness, and one training loop per model."""
