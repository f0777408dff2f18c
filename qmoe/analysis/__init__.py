"""Analysis: what the cached results say. Nothing here trains; it reads the results cache.

`stats` (the significance tests) -> `tables` (the paper's tables, efficiency, deployment projection) and `explain`
(routing decisions in words, routing recomputed from cached arrays) -> `claims` (the claims ledger: every numeric
claim of the paper against what was measured). May import every layer below; never the app.
"""
