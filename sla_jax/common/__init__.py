"""What every layer uses, standard library only: errors (``errors``), the settings dataclasses' base
(``settings``), the platform's defaults (``runtime``), the workdir's lock and space checks (``workdir``) and
phase timing (``timing``)."""
