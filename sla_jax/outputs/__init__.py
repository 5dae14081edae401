"""What sla_jax writes for people and programs: files (``files``), figures (``plots``), report.html (``report``)."""
