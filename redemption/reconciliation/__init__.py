"""Three-way reconciliation: what was ordered, what we bound, and what the provider holds."""
