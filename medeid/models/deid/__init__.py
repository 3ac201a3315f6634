"""MedSem-DeID: reversible, medical-semantics-preserving face de-identification."""
