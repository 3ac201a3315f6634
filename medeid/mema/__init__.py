"""MeMa: the synthetic patient-face dataset re-generated from real patients (see jobs/build_mema.py)."""
