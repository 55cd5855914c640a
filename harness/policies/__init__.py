"""Policies compute log pi(completion | context) for batches: tabular (bandit) and LM."""
