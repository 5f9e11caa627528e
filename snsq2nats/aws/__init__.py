"""AWS: clients, the scan, and how AWS errors are classified."""
