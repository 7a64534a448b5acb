"""Used by every room: atomic writes, run locks, safe names, text tables, devices."""
