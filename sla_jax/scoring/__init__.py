"""Scoring with a trained network: image and patch features (``features``), the evaluation of a run
(``detection``), a detector ready to score (``detector``), its export form (``deploy``) and the scoring of
new images (``inspection``)."""
