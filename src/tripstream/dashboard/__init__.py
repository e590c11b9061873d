"""The live results dashboard: a stdlib HTTP server, SQL queries per panel, and static assets."""
