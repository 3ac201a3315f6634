"""Models: face recognisers and the identity embedder, medical encoders, generator, MedSem-DeID."""
