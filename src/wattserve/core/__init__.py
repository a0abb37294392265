"""The shared core: hardware, models, deployments and the performance, power and cost model.

Pure and synchronous: nothing here does I/O except the catalog loaders, which read package data
or a file the caller names.
"""
