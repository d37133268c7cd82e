"""Reports: statistics over seeds (paired intervals), comparison tables and figures."""
