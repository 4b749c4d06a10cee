"""Sets up the worker's Python environment from QGIS: stdlib only, so QGIS's own Python runs it.

spec: what the environment needs (requirements.txt + environment.env, shared with
scripts/setup.sh). platforms: interpreters, paths, GPU and compiler per OS. plan: what is
missing. installer: runs the steps with progress and a log. verify: a tiny caption + search
through the real worker.
"""
