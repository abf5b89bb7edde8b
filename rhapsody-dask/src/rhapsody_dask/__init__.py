"""RHAPSODY's 'dask' backend (on dask.distributed); see backend.py."""
