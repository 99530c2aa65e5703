"""The rollout side: environment construction and rollout workers (plain and as Ray actors)."""
