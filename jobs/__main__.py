"""Run a job worker: `python -m jobs` (make worker-start; make api-start supervises some)."""

import sys

import model
from jobs.worker import main

if __name__ == "__main__":
    try:
        main()
    except (RuntimeError, model.ArtifactError) as e:
        sys.exit(f"jobs: {e}")
