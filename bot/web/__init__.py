"""HTTP in: the webhook, the API for other systems, /metrics; Flask lives only here and in console/."""
