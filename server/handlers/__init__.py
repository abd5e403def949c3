"""HTTP handlers of the /api/v1 routes, one module per area; each exports ``ROUTES``."""
