"""Metrics and reports: verification rates, classification and segmentation scores."""
