"""Data layer: image folders (folder.py), the built-in defect dataset (builtin.py), output files (io.py)."""
