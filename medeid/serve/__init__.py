"""MedSem-DeID as a Ray Serve application: `serve run medeid.serve:app` (see `service`)."""

from medeid.serve.service import AppArgs, app

__all__ = ["AppArgs", "app"]
