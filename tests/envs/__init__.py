"""What tests load by entry point (`tests.envs.toy:StepCounterEnv`): envs that are small,
deterministic, slow, faulty or malformed on purpose, and example custom networks."""
